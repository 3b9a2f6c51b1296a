"""membership_log.ops.alerts: the pure decisions on plain data (what to send, when to re-send,
--min-duration, a restart without repeats), then the sender over real stores with a
recording stand-in for Alertmanager (the real one: test_ops_live.py)."""

from __future__ import annotations

import sqlite3

import pytest
from samples import NODES
from typer.testing import CliRunner

from membership_log import settings
from membership_log.cli import app
from membership_log.core.outage import Backoff
from membership_log.demo.synthetic import make_store
from membership_log.ops import alerts
from membership_log.ops.alertmanager import AlertmanagerError
from membership_log.ops.alerts import (
    FIRING,
    OVER,
    RESEND,
    RESOLVED,
    Delivery,
    Incident,
    plan,
    recorded,
)

S = 1_000_000  # one second in µs
T0 = 1_800_000_000 * S
N1, N2 = NODES[1], NODES[2]


def inc(node=N1, down=T0, up=None, cause="failed", seq=None, observer="node0") -> Incident:
    seq = seq if seq is not None else down // S % 100_000
    return Incident(("", node, seq), node, cause, observer, down, up, (observer,))


def kinds(p) -> list[tuple[str, str, int]]:
    return [(s.kind, s.incident.node, s.incident.down_at) for s in p.sends]


# -- what to send --------------------------------------------------------------------------


def test_an_open_incident_fires_once_then_is_resent_every_resend():
    i = inc()
    p = plan([i], {}, {}, now=T0 + 5 * S)
    assert kinds(p) == [(FIRING, N1, T0)]
    delivered = recorded(p.sends, {}, T0 + 5 * S)
    assert delivered == {i.key: Delivery(T0 + 5 * S, None)}
    last = {i.key: T0 + 5 * S}
    p = plan([i], delivered, last, now=T0 + 30 * S, resend_us=60 * S)
    assert p.sends == [] and p.wake_at == T0 + 65 * S  # due again one --resend later
    p = plan([i], delivered, last, now=T0 + 65 * S, resend_us=60 * S)
    assert kinds(p) == [(RESEND, N1, T0)]
    # A resend keeps the first delivery time.
    assert recorded(p.sends, delivered, T0 + 65 * S) == {i.key: Delivery(T0 + 5 * S, None)}


def test_a_closed_incident_is_resolved_once_and_never_again():
    opened = inc()
    delivered = {opened.key: Delivery(T0 + S)}
    closed = inc(up=T0 + 90 * S)
    p = plan([closed], delivered, {opened.key: T0 + S}, now=T0 + 91 * S)
    assert kinds(p) == [(RESOLVED, N1, T0)]
    from membership_log.ops.alerts import alert

    a = alert(p.sends[0])
    assert a["startsAt"].endswith(".000000Z") and "endsAt" in a
    delivered = recorded(p.sends, delivered, T0 + 91 * S)
    assert delivered[closed.key] == Delivery(T0 + S, T0 + 91 * S)
    for now in (T0 + 92 * S, T0 + 10_000 * S):
        assert plan([closed], delivered, {}, now=now).sends == []


def test_an_incident_over_before_it_was_ever_sent_is_sent_as_already_over():
    """The sender was down while it happened: it is delivered late, not lost; Alertmanager
    notifies no alert it never saw firing, so it goes out firing (as its own alert) until
    --over-hold after delivery, and is never sent again."""
    from membership_log.ops.alerts import alert

    closed = inc(down=T0 + 7, up=T0 + 30 * S)
    p = plan([closed], {}, {}, now=T0 + 3600 * S)
    assert kinds(p) == [(OVER, N1, T0 + 7)]
    assert recorded(p.sends, {}, T0 + 3600 * S)[closed.key] == \
        Delivery(T0 + 3600 * S, T0 + 3600 * S)
    a = alert(p.sends[0], now=T0 + 3600 * S, over_hold_us=300 * S)
    assert a["startsAt"] == "2027-01-15T08:00:00.000007Z"
    assert a["endsAt"] == "2027-01-15T09:05:00.000000Z"  # delivery + 300 s, in the future
    assert a["labels"]["incident"] == a["startsAt"]  # its own alert: merges with no other
    assert a["annotations"]["ended_at"] == "2027-01-15T08:00:30.000000Z"
    assert "already over" in a["annotations"]["summary"]
    assert plan([closed], recorded(p.sends, {}, T0 + 3600 * S), {}, now=T0 + 9999 * S).sends \
        == []
    # Over for more than a day (a first run over a long log): history, sent resolved (which
    # Alertmanager records and notifies nobody of), not a page for every old outage.
    assert kinds(plan([closed], {}, {}, now=T0 + 30 * S + 86_401 * S)) == [(RESOLVED, N1, T0 + 7)]


def test_open_alerts_carry_no_end_and_resolved_ones_their_exact_end():
    from membership_log.ops.alerts import alert

    i = inc(down=T0 + 123_456, up=T0 + 61 * S + 654_321)
    a = alert(alerts.Send(i, RESOLVED))
    assert a["startsAt"] == "2027-01-15T08:00:00.123456Z"
    assert a["endsAt"] == "2027-01-15T08:01:01.654321Z"
    assert a["labels"] == {"alertname": "MembershipNodeDown", "node": N1, "cause": "failed",
                           "observer": "node0", "severity": "critical"}
    assert "endsAt" not in alert(alerts.Send(i, RESEND))  # still open as far as it knows
    merged = Incident(("", N1, T0), N1, "left", None, T0, None, ("a", "b"))
    assert "observer" not in alert(alerts.Send(merged, FIRING))["labels"]


# -- --min-duration ------------------------------------------------------------------------


def test_min_duration_holds_an_open_incident_until_it_has_lasted_that_long():
    i = inc()
    p = plan([i], {}, {}, now=T0 + 10 * S, min_duration_us=60 * S)
    assert p.sends == [] and p.wake_at == T0 + 60 * S
    p = plan([i], {}, {}, now=T0 + 60 * S, min_duration_us=60 * S)
    assert kinds(p) == [(FIRING, N1, T0)]


def test_min_duration_drops_short_incidents_but_never_holds_back_a_resolution():
    short = inc(up=T0 + 20 * S)
    assert plan([short], {}, {}, now=T0 + 99 * S, min_duration_us=60 * S).sends == []
    long = inc(N2, up=T0 + 61 * S)
    assert kinds(plan([long], {}, {}, now=T0 + 99 * S, min_duration_us=60 * S)) == \
        [(OVER, N2, T0)]
    # Sent firing under an older, lower --min-duration: its end goes out whatever it lasted.
    assert kinds(plan([short], {short.key: Delivery(T0 + 5 * S)}, {}, now=T0 + 99 * S,
                      min_duration_us=60 * S)) == [(RESOLVED, N1, T0)]


# -- restarts --------------------------------------------------------------------------------


def test_a_restart_resends_open_alerts_at_once_and_repeats_nothing_else():
    """After a restart ``last_sent`` is empty: open incidents go out again at once (the
    Alertmanager may have restarted too; it dedups by labels); delivered resolutions not."""
    done = inc(N2, down=T0, up=T0 + 30 * S)
    still = inc(N1, down=T0 + 100 * S)
    delivered = {done.key: Delivery(T0 + S, T0 + 31 * S), still.key: Delivery(T0 + 101 * S)}
    p = plan([done, still], delivered, {}, now=T0 + 120 * S)
    assert kinds(p) == [(RESEND, N1, T0 + 100 * S)]


def test_an_incident_reopened_after_being_resolved_fires_again():
    """A rebuild can reopen what the log now says is open: the record heals itself."""
    i = inc()
    p = plan([i], {i.key: Delivery(T0 + S, T0 + 9 * S)}, {}, now=T0 + 20 * S)
    assert kinds(p) == [(RESEND, N1, T0)]
    assert recorded(p.sends, {i.key: Delivery(T0 + S, T0 + 9 * S)}, T0 + 20 * S)[i.key] == \
        Delivery(T0 + S, None)


def test_one_label_set_ends_with_its_current_open_incident():
    """Alertmanager keeps one alert per label set: a late resolution of an older incident
    must be followed by the current one in the same post, or it would hide it."""
    old = inc(down=T0, up=T0 + 60 * S, seq=1)
    new = inc(down=T0 + 120 * S, seq=2)
    delivered = {old.key: Delivery(T0 + S), new.key: Delivery(T0 + 121 * S)}
    p = plan([old, new], delivered, {new.key: T0 + 121 * S}, now=T0 + 130 * S)
    assert kinds(p) == [(RESOLVED, N1, T0), (RESEND, N1, T0 + 120 * S)]
    # Another label set (another cause) is left alone.
    other = inc(down=T0 + 125 * S, cause="operator", seq=3)
    delivered[other.key] = Delivery(T0 + 126 * S)
    p = plan([old, new, other], delivered,
             {new.key: T0 + 121 * S, other.key: T0 + 126 * S}, now=T0 + 130 * S)
    assert [s.incident.key for s in p.sends] == [old.key, new.key]


# -- the sender over a real node store ------------------------------------------------------


class Recorder:
    """Stands in for Alertmanager: records posts, fails while ``down``."""

    def __init__(self) -> None:
        self.posts: list[list[dict]] = []
        self.down = 0

    def __call__(self, url: str, batch: list[dict]) -> None:
        if self.down:
            self.down -= 1
            raise AlertmanagerError(f"cannot reach Alertmanager at {url}: Connection refused")
        self.posts.append(batch)

    def alerts(self) -> list[dict]:
        return [a for batch in self.posts for a in batch]


@pytest.fixture
def flappy(tmp_path) -> settings.Settings:
    """A node store with a few hundred incidents, some still open."""
    return make_store(str(tmp_path / "flappy"), "node0", 5000, flap_rate=0.05)


def counts(store_path: str) -> tuple[int, int]:
    with sqlite3.connect(store_path) as c:
        return c.execute("SELECT count(*), count(resolved_at) FROM alert_delivery").fetchone()


def test_sender_delivers_everything_once_and_a_restart_repeats_nothing(flappy):
    post = Recorder()
    clock = iter(range(T0, T0 + 10_000 * S, S)).__next__
    first = alerts.Sender(flappy.db_url, "http://am.invalid:9093", post=post, clock=clock)
    out = first.run_pass()
    sent = post.alerts()
    resolved = [a for a in sent if "endsAt" in a]
    firing = [a for a in sent if "endsAt" not in a]
    assert len(resolved) > 100 and 1 <= len(firing) <= 3  # 3 members: at most 3 open
    assert len(post.posts) == -(-len(sent) // alerts.BATCH)
    assert counts(flappy.sqlite_path) == (len(sent), len(resolved))
    assert out.wake_at is not None  # the open ones are due again one --resend later
    # Every incident of the log went out with its exact times, oldest first.
    starts = [a["startsAt"] for a in sent]
    assert starts == sorted(starts)
    assert {a["labels"]["observer"] for a in sent} == {"node0"}

    # A restart: a new sender (no memory) re-sends only the open incidents.
    post.posts.clear()
    again = alerts.Sender(flappy.db_url, "http://am.invalid:9093", post=post, clock=clock)
    again.run_pass()
    assert sorted(a["labels"]["node"] for a in post.alerts()) == \
        sorted(a["labels"]["node"] for a in firing)
    assert all("endsAt" not in a for a in post.alerts())
    # Another target has its own progress.
    post.posts.clear()
    alerts.Sender(flappy.db_url, "http://other:9093", post=post, clock=clock).run_pass()
    assert len(post.alerts()) == len(sent)


def test_once_retries_then_fails_in_one_line_and_keeps_what_was_delivered(flappy):
    post = Recorder()
    post.down = 10
    naps: list[float] = []
    sender = alerts.Sender(flappy.db_url, "http://u:s3cret@am.invalid:9093", post=post)
    with pytest.raises(AlertmanagerError) as e:
        alerts.once(sender, retries=3, backoff=Backoff(0.5, 8), sleep=naps.append)
    assert naps == [0.5, 1, 2]
    assert str(e.value) == ("cannot reach Alertmanager at http://u:s3cret@am.invalid:9093: "
                            "Connection refused (4 attempts over 3.5 s; 0 alert(s) delivered "
                            "before it failed)")
    assert counts(flappy.sqlite_path) == (0, 0)
    # The password never reaches the store: the target is kept masked.
    post.down = 1
    out = alerts.once(sender, retries=3, sleep=naps.append)
    assert out.delivered and counts(flappy.sqlite_path)[0] == len(out.delivered)
    with sqlite3.connect(flappy.sqlite_path) as c:
        assert c.execute("SELECT DISTINCT target FROM alert_delivery").fetchall() == \
            [("http://u:***@am.invalid:9093",)]


def test_follow_reports_an_outage_once_and_delivers_after_it(flappy):
    post = Recorder()
    post.down = 5
    said: list[str] = []
    warned: list[str] = []
    naps: list[float] = []
    sender = alerts.Sender(flappy.db_url, "http://am.invalid:9093", post=post)
    alerts.follow(sender, interval=1.0, say=said.append, warn=warned.append,
                  sleep=naps.append, stop=lambda: bool(post.posts) and len(naps) > 8)
    assert naps[:5] == [1, 2, 4, 8, 16]  # backoff while Alertmanager is down
    assert len(warned) == 2
    assert warned[0].startswith("cannot reach Alertmanager at http://am.invalid:9093: "
                                "Connection refused (retrying")
    assert warned[1].startswith("Alertmanager reachable again after ")
    assert counts(flappy.sqlite_path)[0] == len(post.alerts())
    assert any("resolved (down " in line for line in said)  # years old: history


def test_follow_survives_a_store_that_cannot_be_read(tmp_path):
    warned: list[str] = []
    naps: list[float] = []
    sender = alerts.Sender(f"sqlite:///{tmp_path}/missing.db", "http://am.invalid:9093",
                           post=Recorder())
    alerts.follow(sender, say=print, warn=warned.append, sleep=naps.append,
                  stop=lambda: len(naps) >= 4)
    assert len(warned) == 1 and "no store at" in warned[0]


# -- the central store: merged and per-observer views ---------------------------------------


@pytest.mark.postgres
def test_central_store_merged_and_per_observer(tmp_path, pg_url):
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--db", pg_url]).exit_code == 0
    for observer in ("node0", "node1"):
        s = make_store(str(tmp_path / observer), observer, 600, flap_rate=0.05)
        r = runner.invoke(app, ["ship", "--base-dir", s.base_dir, "--to", pg_url])
        assert r.exit_code == 0, r.output
    post = Recorder()
    merged = alerts.Sender(pg_url, "http://am.invalid:9093", post=post).run_pass()
    assert merged.delivered
    assert all("observer" not in a["labels"] for a in post.alerts())
    # The identity of a merged incident: ("", node, its start in µs).
    from membership_log.history import api as history

    with history.open_store(pg_url) as store:
        origin, incs = alerts.read_incidents(store)
        rows = store.alert_deliveries(alerts.target_of("http://am.invalid:9093"), "")
    assert origin == "" and {(i.node, i.down_at) for i in incs} == set(rows)
    assert any(len(i.seen_by) == 2 for i in incs)  # both observers saw some outages

    post.posts.clear()
    alerts.Sender(pg_url, "http://am.invalid:9093", observer="node1", post=post).run_pass()
    assert {a["labels"]["observer"] for a in post.alerts()} == {"node1"}
    post.posts.clear()
    again = alerts.Sender(pg_url, "http://am.invalid:9093", post=post).run_pass()
    assert {s.kind for s in again.delivered} <= {RESEND}  # nothing repeated but open ones
    with pytest.raises(Exception, match="holds no log of 'nobody'"):
        alerts.Sender(pg_url, "http://am.invalid:9093", observer="nobody",
                      post=post).run_pass()
