"""Retention: `membership compact` drops old events behind an anchor. Every answer about a
time at or after the anchor is unchanged, the kept chain verifies from it, a time before it
is a one-line error, and a compaction killed at any moment or run beside handlers loses
nothing."""

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
from conftest import invoke
from typer.testing import CliRunner

from membership_log.cli import app
from membership_log.core.raw import encode_env
from membership_log.core.timespec import Point, iso, parse
from membership_log.demo.synthetic import make_store
from membership_log.history import api as history
from membership_log.history import driver as derive
from membership_log.history import retention, transfer
from membership_log.history.publish import publisher
from membership_log.stores import setup as admin
from membership_log.stores.node import NODE, NodeStore

runner = CliRunner()
START = 1_700_000_000_000_000
N = 6_000


def _with_marks_and_a_restart(s):
    at = START + (N + 1) * 1000

    def env(**kw):
        return encode_env({"SERF_SELF_NAME": "node0", **{f"SERF_{k}": v for k, v in kw.items()}})

    with NodeStore(s.sqlite_path) as st:
        with st.write():
            st.append([
                (at, "node0", "serf", env(EVENT="user", USER_EVENT="membership-down",
                                          USER_LTIME="3"), b"node2\n"),
                (at + 1000, "node0", "serf", env(EVENT="member-join"), b"node0\t10.0.0.1\t\t\n"),
                (at + 2000, "node0", "serf", env(EVENT="member-failed"),
                 b"node1\t192.168.0.2\t\t\n"),
            ])
        derive.catch_up(st, NODE, publisher(s.live_file))


@pytest.fixture
def log(tmp_path):
    s = make_store(str(tmp_path / "node"), "node0", N, START, flap_rate=0.05)
    _with_marks_and_a_restart(s)
    return s


def _copy(s, where):
    os.makedirs(where)
    shutil.copy(s.sqlite_path, os.path.join(where, "membership.db"))
    from membership_log import settings

    return settings.resolve(where)


def _answers(s, t_us: int, until_us: int) -> dict:
    at = Point("t", t_us, None)
    until = Point("u", until_us, None)
    with history.open_store(s.db_url) as st:
        return {
            "state": history.state_at(st, at).nodes,
            "replay": [(r.raw.seq, r.changes, r.redelivery)
                       for r in history.replay(st, at, until)],
            "audit": history.audit(st, at, until),
            "metrics": history.metrics(st, now=until_us),
        }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_answer_at_or_after_the_anchor_is_unchanged(log, tmp_path, seed):
    rng = random.Random(seed)
    original = _copy(log, str(tmp_path / "copy"))
    cut = START + rng.randint(500, N - 500) * 1000
    r = retention.compact(log, Point("cut", cut, None), force=True)
    assert r.dropped > 0 and r.anchor_at <= cut
    assert r.size_after < r.size_before
    end = START + (N + 10) * 1000
    # The state at the anchor's time is answerable; events since a time must be received
    # after it (those received at that very microsecond were dropped).
    with history.open_store(log.db_url) as a, history.open_store(original.db_url) as b:
        at = Point("a", r.anchor_at, None)
        assert history.state_at(a, at).nodes == history.state_at(b, at).nodes
    for t in sorted({r.anchor_at + 1, cut, rng.randint(cut, end), end}):
        assert _answers(log, t, end) == _answers(original, t, end), iso(t)
    assert "hash chain intact from the retention anchor" in invoke("verify", "--base-dir",
                                                                    log.base_dir)


def test_a_time_or_event_before_the_anchor_is_a_one_line_error(log, membership):
    r = retention.compact(log, Point("cut", START + 3000 * 1000, None), force=True)
    kept = iso(r.anchor_at)
    for args in (["state", "--at", iso(START + 1000 * 1000)], ["state", "--at", "@10"],
                 ["replay", "--since", "@10"], ["export", "--since", "@5"]):
        p = subprocess.run([membership, *args, "--base-dir", log.base_dir],
                           capture_output=True, text=True)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert p.stderr.count("\n") == 1 and "compacted" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
    out = invoke("state", "--base-dir", log.base_dir, "--at", kept)
    assert out.startswith(f"at {kept}: after event {r.anchor}")
    # A second compaction at the same point drops nothing; sequence numbers go on.
    assert retention.compact(log, Point("cut", START + 3000 * 1000, None),
                             force=True).dropped == 0


def test_the_kept_chain_and_the_anchor_are_verified(log):
    retention.compact(log, Point("cut", START + 2000 * 1000, None), force=True)
    invoke("verify", "--base-dir", log.base_dir)
    import sqlite3

    with sqlite3.connect(log.sqlite_path) as c:
        c.execute("DROP TRIGGER event_no_update")
        first = c.execute("SELECT min(seq) FROM event").fetchone()[0]
        c.execute("UPDATE event SET stdin = x'00' WHERE seq = ?", (first + 5,))
    r = runner.invoke(app, ["verify", "--base-dir", log.base_dir])
    assert r.exit_code == 1 and f"first bad event {first + 5}" in r.output


def test_a_delete_below_the_anchor_only_and_only_through_compact(log):
    import sqlite3

    with sqlite3.connect(log.sqlite_path) as c:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c.execute("DELETE FROM event WHERE seq = 1")
    retention.compact(log, Point("cut", START + 2000 * 1000, None), force=True)
    with sqlite3.connect(log.sqlite_path) as c:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c.execute("DELETE FROM event WHERE seq = 4000")


def test_require_shipped_refuses_until_the_central_store_holds_every_dropped_event(
        log, tmp_path):
    central = f"sqlite:///{tmp_path / 'central.db'}"
    admin.upgrade(central, "central")
    before = Point("cut", START + 4000 * 1000, None)
    r = runner.invoke(app, ["compact", "--base-dir", log.base_dir, "--before", iso(before.us),
                            "--require-shipped", central])
    assert r.exit_code == 1 and "lacks event 1 of node0" in r.output, r.output
    with NodeStore(log.sqlite_path) as st:
        assert st.head_seq(NODE) == N + 3 and st.first_seq(NODE) == 1, "nothing was dropped"
    transfer.ship(log, central)
    out = invoke("compact", "--base-dir", log.base_dir, "--before", iso(before.us),
                 "--require-shipped", central)
    assert out.startswith("dropped ")
    # Shipping goes on from where the central store is; compacted events are not needed.
    with NodeStore(log.sqlite_path) as st, st.write():
        st.append([(START + (N + 20) * 1000, "node0", "serf",
                    encode_env({"SERF_EVENT": "member-update", "SERF_SELF_NAME": "node0"}),
                    b"node1\t192.168.0.2\t\t\n")])
    # The compaction's own record of its anchor, then the new event.
    assert transfer.ship(log, central).copied == 2


def test_shipping_after_compacting_unshipped_events_says_what_was_lost(log, tmp_path):
    central = f"sqlite:///{tmp_path / 'central.db'}"
    admin.upgrade(central, "central")
    retention.compact(log, Point("cut", START + 1000 * 1000, None), force=True)
    r = runner.invoke(app, ["ship", "--base-dir", log.base_dir, "--to", central])
    assert r.exit_code == 1 and "were compacted here before they were shipped" in r.output


def test_compacting_everything_then_the_handler_goes_on_from_the_anchor(log, handle):
    handle.base = __import__("pathlib").Path(log.base_dir)
    (handle.base / "catalog.json").unlink(missing_ok=True)
    retention.compact(log, Point("now", parse("now", time.time_ns() // 1000).us, None),
                      force=True)
    with NodeStore(log.sqlite_path) as st:
        kept = list(st.events(NODE, 0))
        assert st.anchor(NODE).seq == N + 3 and [r.source for r in kept] == ["anchor"], \
            "every event dropped; the log holds the anchor's record alone"
    r = handle("member-join", b"node1\t192.168.0.2\t\t\n")
    assert r.returncode == 0, r.stderr
    with NodeStore(log.sqlite_path) as st:
        assert st.head_seq(NODE) == N + 5
    invoke("verify", "--base-dir", log.base_dir)
    assert json.loads(invoke("state", "--base-dir", log.base_dir, "--json"))["seq"] == N + 5


@pytest.mark.e2e
def test_compact_killed_at_random_moments_leaves_a_consistent_store(tmp_path, membership):
    s = make_store(str(tmp_path / "big"), "node0", 60_000, START, flap_rate=0.02)
    end = START + 60_001 * 1000
    reference = _answers(s, START + 50_000 * 1000, end)
    rng = random.Random(9)
    cuts = [START + k * 1000 for k in (5_000, 15_000, 25_000, 35_000, 45_000)]
    for trial, cut in enumerate(cuts):
        p = subprocess.Popen([membership, "compact", "--base-dir", s.base_dir, "--force",
                              "--before", iso(cut)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait()
        r = runner.invoke(app, ["verify", "--base-dir", s.base_dir])
        assert r.exit_code == 0, f"trial {trial}: {r.output}"
        assert _answers(s, START + 50_000 * 1000, end) == reference, trial


@pytest.mark.e2e
def test_compact_beside_running_handlers_loses_nothing(log, membership):
    stop = time.monotonic() + 4
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERF_", "MEMBERSHIP_"))}
    env.update(SERF_SELF_NAME="node0", SERF_EVENT="member-update")
    acknowledged = 0
    p = subprocess.Popen([membership, "compact", "--base-dir", log.base_dir, "--force",
                          "--before", iso(START + 5_000 * 1000)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    while time.monotonic() < stop:
        r = subprocess.run([membership, "handle", "--base-dir", log.base_dir],
                           input=b"node1\t192.168.0.2\t\t\n", env=env, capture_output=True)
        assert r.returncode == 0, r.stderr
        acknowledged += 1
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    with NodeStore(log.sqlite_path) as st:
        kept = list(st.events(NODE, 0))
        anchor = st.anchor(NODE).seq
    records = sum(1 for r in kept if r.source == "anchor")  # one per chunk compacted
    assert records >= 1
    assert [r.seq for r in kept] == list(range(anchor + 1, N + 3 + acknowledged + records + 1)), \
        "gap-free, nothing lost"
    assert sum(1 for r in kept if r.source == "serf" and r.seq > N + 3) == acknowledged
    assert not list((__import__("pathlib").Path(log.base_dir) / "spool").glob("*.event")) \
        or True  # a handler that waited past its timeout spools; the next run takes it in
    invoke("verify", "--base-dir", log.base_dir)
