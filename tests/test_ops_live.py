"""The operations commands against the real servers, driven by the real handler:

- the real Prometheus scrapes the real ``membership serve`` every second and sees a
  failure the handler recorded (``membership_node_up`` 0, the incident counted);
- ``membership alerts`` delivers to the real Alertmanager: ``GET /api/v2/alerts`` shows the
  exact ``startsAt`` (the API prints milliseconds), and the exact ``endsAt`` is proven by
  what Alertmanager itself sends on: resolved alerts vanish from the API at once, so a
  webhook receiver (a tiny server in this test) gets Alertmanager's resolution
  notification, which carries both times to the microsecond;
- Alertmanager stopped for 10 s under ``alerts --follow`` loses nothing.

Every process is started here and stopped by pid; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import re
import sqlite3
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import cli
from opshelpers import Proc, Serve, wait_for
from realservers import Alertmanager, free_port
from samples import NODES

from membership_log.core.timespec import to_us

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
N1, N2 = NODES[1], NODES[2]
JOIN = b"node1\t192.168.100.51\t\t\nnode2\t192.168.100.52\t\t\n"
NODE1 = b"node1\t192.168.100.51\t\t\n"
NODE2 = b"node2\t192.168.100.52\t\t\n"


def us_of(ts: str) -> int:
    """An RFC 3339 time with any number of fraction digits (Go trims trailing zeros) -> µs."""
    m = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", ts)
    assert m, ts
    frac = (m.group(2) or "").ljust(6, "0")[:6]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return to_us(datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}")
                 .astimezone(timezone.utc))


def to_ms(iso: str) -> str:
    """The log's ISO time as Alertmanager's API prints it: milliseconds."""
    return iso[:23] + "Z"


def incidents(membership: str, base, node: str) -> list[dict]:
    r = cli(membership, "audit", "--base-dir", str(base), "--node", node, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["nodes"][node]["incidents"]


# -- Prometheus ------------------------------------------------------------------------------


def prometheus_config(target: str) -> str:
    """examples/prometheus.yml with 1 s intervals, scraping ``target``."""
    text = (EXAMPLES / "prometheus.yml").read_text()
    for old, new in [("scrape_interval: 15s", "scrape_interval: 1s"),
                     ("evaluation_interval: 15s", "evaluation_interval: 1s"),
                     ('"127.0.0.1:9137"', json.dumps(target)),
                     # No Alertmanager here: a port nobody listens on.
                     ('"127.0.0.1:9093"', json.dumps(f"127.0.0.1:{free_port()}")),
                     ("- prometheus-rules.yml", f"- {EXAMPLES / 'prometheus-rules.yml'}")]:
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_prometheus_scrapes_serve_and_sees_a_failure(membership, handle, base, tmp_path,
                                                     prometheus_factory):
    handle("member-join", JOIN)
    with Serve(membership, ["--base-dir", str(base)], tmp_path) as serve:
        prom = prometheus_factory(prometheus_config(serve.address))

        def value(promql: str) -> float | None:
            result = prom.query(promql)
            return float(result[0]["value"][1]) if result else None

        up = f'membership_node_up{{node="{N1}"}}'
        failures = f'membership_node_incidents_total{{node="{N1}",cause="failed"}}'
        wait_for("the first scrape", lambda: value(up) == 1, timeout=60)
        assert value(failures) == 0  # the series exists before its first incident
        handle("member-failed", NODE1)
        t0 = time.monotonic()
        wait_for(f"{up} == 0", lambda: value(up) == 0, timeout=30)
        seen = time.monotonic() - t0
        assert value(failures) == 1
        assert value(f'membership_node_up{{node="{N2}"}}') == 1
        assert value('up{job="membership"}') == 1
        assert value("membership_live_nodes") == 2
        # Every example rule loads and evaluates against the real exporter.
        with urllib.request.urlopen(f"{prom.url}/api/v1/rules", timeout=10) as r:
            groups = json.load(r)["data"]["groups"]
        assert {rule["health"] for g in groups for rule in g["rules"]} == {"ok"}
        print(f"failure recorded -> seen by Prometheus in {seen:.1f} s (1 s scrapes)")
        assert serve.stop() == 0


# -- Alertmanager ----------------------------------------------------------------------------


class Webhook:
    """A webhook receiver for Alertmanager's notifications, on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, status: str, node: str) -> list[dict]:
        return [a for n in self.received for a in n["alerts"]
                if a["status"] == status and a["labels"].get("node") == node]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


# Every alert its own group, notified at once and again 1 s after any change, resolutions
# included: what Alertmanager sends on is what it holds.
WEBHOOK_CONFIG = """\
route:
  receiver: hook
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def test_alerts_carry_the_exact_down_and_up_times(membership, handle, base, tmp_path,
                                                 webhook):
    am = Alertmanager(tmp_path)
    am.config.write_text(WEBHOOK_CONFIG.format(url=webhook.url))
    am.start()
    try:
        handle("member-join", JOIN)
        handle("member-failed", NODE1)
        r = cli(membership, "alerts", "--base-dir", str(base), "--to", am.url)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert f"{N1} failed: firing since " in out
        assert out.endswith(f"1 alert(s) delivered to {am.url}: 1 firing, 0 re-sent (still "
                            "open), 0 resolved\n")
        [incident] = incidents(membership, base, N1)
        down_at = incident["down_at"]  # the failure's receive time, to the microsecond

        [got] = am.alerts()
        assert got["labels"] == {"alertname": "MembershipNodeDown", "node": N1,
                                 "cause": "failed", "observer": "node0",
                                 "severity": "critical"}
        assert got["startsAt"] == to_ms(down_at)  # what the API shows: milliseconds
        assert got["status"]["state"] == "active"
        firing = wait_for("the firing notification",
                          lambda: webhook.alerts("firing", N1), timeout=30)
        assert us_of(firing[0]["startsAt"]) == us_of(down_at)  # held to the microsecond

        handle("member-join", NODE1)
        r = cli(membership, "alerts", "--base-dir", str(base), "--to", am.url)
        assert r.returncode == 0, r.stderr
        assert f"{N1} failed: resolved (down {down_at} to " in r.stdout.decode()
        [incident] = incidents(membership, base, N1)
        up_at = incident["up_at"]
        # A resolved alert (endsAt in the past) is gone from GET /api/v2/alerts at once...
        assert am.alerts() == []
        # ... but Alertmanager sends the resolution on, with the times it was given.
        [resolved] = wait_for("the resolution", lambda: webhook.alerts("resolved", N1),
                              timeout=30)
        assert us_of(resolved["startsAt"]) == us_of(down_at)
        assert us_of(resolved["endsAt"]) == us_of(up_at)

        # Nothing is sent twice; what was sent is in the store.
        r = cli(membership, "alerts", "--base-dir", str(base), "--to", am.url)
        assert r.stdout.decode() == (f"0 alert(s) delivered to {am.url}: 0 firing, 0 re-sent "
                                     "(still open), 0 resolved\n")
        with sqlite3.connect(base / "membership.db") as c:
            rows = c.execute("SELECT target, origin, node, down_seq, resolved_at IS NOT NULL "
                             "FROM alert_delivery").fetchall()
        assert rows == [(am.url, "", N1, incident["down_seq"], 1)]
    finally:
        am.stop()


def test_unreachable_alertmanager_fails_one_pass_in_one_line(membership, handle, base):
    handle("member-failed", NODE1)
    url = f"http://127.0.0.1:{free_port()}"
    t = time.monotonic()
    r = cli(membership, "alerts", "--base-dir", str(base), "--to", url)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err == (f"membership: cannot reach Alertmanager at {url}: Connection refused "
                   "(5 attempts over 7.5 s; 0 alert(s) delivered before it failed)\n")
    assert 7 < time.monotonic() - t < 30


def test_alertmanager_down_for_10s_loses_nothing(membership, handle, base, tmp_path):
    """``alerts --follow`` while Alertmanager is stopped for 10 s and started again: the
    alert posted before comes back (re-sent: Alertmanager keeps alerts in memory only), the
    failure recorded during the outage arrives, each with its exact start; the outage is
    reported once, its end once."""
    am = Alertmanager(tmp_path)
    am.start()
    handle("member-join", JOIN)
    follow = Proc(membership, ["alerts", "--base-dir", str(base), "--to", am.url, "--follow",
                               "--resend", "2", "--interval", "0.2"], tmp_path, "alerts")
    try:
        handle("member-failed", NODE1)
        t0 = time.monotonic()
        wait_for("node1's alert", lambda: am.alerts(), timeout=30)
        latency = time.monotonic() - t0

        am.stop()
        stopped = time.monotonic()
        handle("member-failed", NODE2)  # recorded while Alertmanager is down
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        am.start()
        restarted = time.monotonic()
        got = wait_for("both alerts after the restart",
                       lambda: (a := am.alerts()) and len(a) == 2 and a, timeout=60)
        back = time.monotonic() - restarted
        starts = {a["labels"]["node"]: a["startsAt"] for a in got}
        assert starts == {N1: to_ms(incidents(membership, base, N1)[0]["down_at"]),
                          N2: to_ms(incidents(membership, base, N2)[0]["down_at"])}
        assert follow.stop() == 0
    finally:
        follow.stop()
        am.stop()
    err = follow.stderr()
    assert err.count("cannot reach Alertmanager") == 1, err
    assert err.count("Alertmanager reachable again after") == 1, err
    assert "Traceback" not in err
    lines = follow.stdout().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"{N1} failed: firing since {incidents(membership, base, N1)[0]['down_at']}",
        f"{N2} failed: firing since {incidents(membership, base, N2)[0]['down_at']}"]
    print(f"handler -> Alertmanager {latency:.2f} s; after the restart, all back in "
          f"{back:.1f} s")
