"""membership_log.ops.alertmanager against the real Alertmanager (API v2), plus its pure parts."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from datetime import datetime

import pytest

from membership_log.core.errors import MembershipError
from membership_log.core.outage import Backoff
from membership_log.core.timespec import iso as rfc3339  # Alertmanager's times are the log's
from membership_log.ops.alertmanager import (
    ALERTNAME,
    AlertmanagerError,
    alert_for,
    mask_url,
    outage_log,
    post_alerts,
)


def now_us() -> int:
    return time.time_ns() // 1000  # the test's own clock, beside the product's


def incident(down_us: int, up_us: int | None = None, node: str = "node1",
             cause: str = "failed") -> dict:
    return {"node": node, "cause": cause, "down_at_us": down_us, "up_at_us": up_us,
            "observer": "node0"}


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# -- pure parts ---------------------------------------------------------------------------

def test_rfc3339_is_exact_to_the_microsecond():
    assert rfc3339(1_795_000_000_123_456) == "2026-11-18T11:06:40.123456Z"
    assert rfc3339(1_795_000_000_000_000) == "2026-11-18T11:06:40.000000Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"


def test_alert_for_open_and_closed_incidents():
    down, up = 1_795_000_000_123_456, 1_795_000_090_654_321
    a = alert_for(incident(down), "node0")
    assert a["labels"] == {"alertname": ALERTNAME, "node": "node1", "cause": "failed",
                           "observer": "node0"}
    assert a["startsAt"] == "2026-11-18T11:06:40.123456Z"
    assert "endsAt" not in a
    assert set(a["annotations"]) == {"summary", "description"}
    assert "suspicion timeout" in a["annotations"]["description"]

    closed = alert_for(incident(down, up, cause="operator"), None)
    assert "observer" not in closed["labels"]  # the central store's merged view
    assert closed["labels"]["cause"] == "operator"
    assert closed["endsAt"] == "2026-11-18T11:08:10.654321Z"
    assert "90.5309 s" in closed["annotations"]["description"]


def test_alert_for_cleans_hostile_names():
    a = alert_for(incident(1_000_000, node="bad\udcff\x1b"), "obs\udc80")
    assert a["labels"]["node"] == "bad\\xff\x1b"
    assert a["labels"]["observer"] == "obs\\x80"
    a["annotations"]["description"].encode("utf-8")  # strict: no lone surrogate left


def test_backoff_doubles_up_to_the_cap_and_resets():
    b = Backoff(initial=1, cap=60)
    assert [b.next() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    b.reset()
    assert b.next() == 1


def test_outage_is_reported_once_when_it_starts_and_once_when_it_ends():
    lines: list[str] = []
    clock = iter([100.0, 172.4])
    log = outage_log(lines.append, clock=lambda: next(clock))
    log.succeeded()
    assert lines == [] and not log.down
    for _ in range(5):
        log.failed(AlertmanagerError("cannot reach Alertmanager at http://x: refused"))
    assert log.down
    assert lines == ["cannot reach Alertmanager at http://x: refused "
                     "(retrying with backoff; reported again once it works)"]
    log.succeeded()
    log.succeeded()
    assert lines[1:] == ["Alertmanager reachable again after 72 s (5 failed attempts)"]
    assert not log.down


def test_mask_url():
    assert mask_url("http://am:s3cret@host:9093/x") == "http://am:***@host:9093/x"
    assert mask_url("http://host:9093") == "http://host:9093"


@pytest.mark.parametrize("url", ["ftp://host", "http://", "host:9093", "",
                                 "http://host:99999", "http://u:s3cret@[::1"])
def test_bad_urls_are_one_line_errors(url):
    from membership_log.core.errors import BadURL, UsageError

    with pytest.raises(BadURL) as e:  # a usage error (exit 2): never retried as an outage
        post_alerts(url, [])
    assert isinstance(e.value, MembershipError) and isinstance(e.value, UsageError)
    assert not isinstance(e.value, AlertmanagerError)
    assert "\n" not in str(e.value) and "s3cret" not in str(e.value)
    assert "URL" in str(e.value)


def test_refused_connection_masks_the_password():
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(AlertmanagerError) as e:
            post_alerts(f"http://am:s3cret@127.0.0.1:{port}", [])
    assert str(e.value) == (f"cannot reach Alertmanager at http://am:***@127.0.0.1:{port}: "
                            "Connection refused")


def test_timeout():
    with socket.socket() as s:  # listens (the kernel accepts) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t = time.monotonic()
        with pytest.raises(AlertmanagerError) as e:
            post_alerts(f"http://127.0.0.1:{port}", [], timeout=0.5)
    assert time.monotonic() - t < 5
    assert str(e.value) == f"Alertmanager at http://127.0.0.1:{port} did not answer within 0.5 s"


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records one request and answers 500 with a two-line body."""

    seen: list[tuple[str, str, bytes]] = []

    def do_POST(self):  # noqa: N802 -- http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers.get("Authorization", ""), body))
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"internal\nerror")

    def log_message(self, *args):
        pass


def test_basic_auth_from_the_url_and_http_errors_in_one_line():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with pytest.raises(AlertmanagerError) as e:
            post_alerts(f"http://am:s%40cret@127.0.0.1:{port}/prefix/", [{"labels": {}}])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    path, auth, body = Recorder.seen[-1]
    assert path == "/prefix/api/v2/alerts"
    assert auth == "Basic YW06c0BjcmV0"  # am:s@cret
    assert body == b'[{"labels": {}}]'
    assert str(e.value) == (f"Alertmanager at http://am:***@127.0.0.1:{port}/prefix/ "
                            "answered HTTP 500: internal error")


# -- the real Alertmanager ----------------------------------------------------------------

def test_firing_alert_reads_back_with_its_start_time(alertmanager):
    down = now_us() - 300_000_000 + 123_456  # 5 minutes ago, odd microseconds
    post_alerts(alertmanager.url, [alert_for(incident(down), "node0")])
    [got] = alertmanager.alerts()
    assert got["labels"] == {"alertname": ALERTNAME, "node": "node1", "cause": "failed",
                             "observer": "node0"}
    assert got["status"]["state"] == "active"
    # Alertmanager keeps startsAt to the nanosecond but its API prints times with
    # milliseconds (go-openapi's DateTime format): the exact value, truncated to the ms.
    assert parse(got["startsAt"]) == parse(rfc3339(down - down % 1000))
    assert got["startsAt"] == rfc3339(down)[:23] + "Z"
    # No endsAt sent: Alertmanager sets now + resolve_timeout (5m), which is why open
    # alerts must be re-sent (--resend) well within 5 minutes.
    lasts = parse(got["endsAt"]) - parse(got["updatedAt"])
    assert lasts.total_seconds() == pytest.approx(300, abs=1)
    assert got["annotations"]["summary"] == "node1 is down (failed)"


def test_resolved_alert_disappears_from_the_api(alertmanager):
    down = now_us() - 300_000_000
    post_alerts(alertmanager.url, [alert_for(incident(down), "node0")])
    assert len(alertmanager.alerts()) == 1
    up = now_us() - 1_000_000
    post_alerts(alertmanager.url, [alert_for(incident(down, up), "node0")])
    # What GET /api/v2/alerts returns for a resolved alert (endsAt in the past): nothing.
    # Its handler skips every alert whose endsAt is before now, before the
    # active/silenced/inhibited/unprocessed filters apply, so no filter brings it back;
    # Alertmanager keeps it in memory only to notify receivers of the resolution, and
    # garbage-collects it later. There is no "resolved" state in the API.
    assert alertmanager.alerts() == []
    for flag in ("active", "silenced", "inhibited", "unprocessed"):
        assert alertmanager.alerts(**{flag: "false"}) == []
    # An incident that is already over when first sent is accepted and listed as nothing.
    post_alerts(alertmanager.url, [alert_for(incident(down, up, node="node2"), "node0")])
    assert alertmanager.alerts() == []


def test_alertmanager_rejects_bad_alerts_in_one_line(alertmanager):
    with pytest.raises(AlertmanagerError) as e:
        post_alerts(alertmanager.url, [{"labels": {"bad-name": "x"}}])
    assert str(e.value).startswith(f"Alertmanager at {alertmanager.url} answered HTTP 400: ")
    assert "invalid" in str(e.value) and "\n" not in str(e.value)


def test_restart_on_the_same_port(alertmanager):
    url = alertmanager.url
    alert = alert_for(incident(now_us() - 60_000_000), "node0")
    post_alerts(url, [alert])
    lines: list[str] = []
    outage, backoff = outage_log(lines.append), Backoff()

    alertmanager.stop()
    for _ in range(3):
        try:
            post_alerts(url, [alert], timeout=2)
        except AlertmanagerError as e:
            outage.failed(e)
            backoff.next()  # the sender would sleep this long
    assert outage.failures == 3 and backoff.next() == 8
    assert lines == [f"cannot reach Alertmanager at {url}: Connection refused "
                     "(retrying with backoff; reported again once it works)"]

    alertmanager.start()
    assert alertmanager.url == url
    # Alerts live in Alertmanager's memory only: after a restart it knows none until the
    # sender re-posts (the storage dir keeps silences and the notification log).
    assert alertmanager.alerts() == []
    post_alerts(url, [alert])
    outage.succeeded()
    backoff.reset()
    assert len(lines) == 2 and lines[1].startswith("Alertmanager reachable again after ")
    [got] = alertmanager.alerts()
    assert got["labels"]["node"] == "node1"
