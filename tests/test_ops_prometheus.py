"""End to end: the real Prometheus scrapes membership_log.render.exposition, evaluates
examples/prometheus-rules.yml and sends to the real Alertmanager.

The exporter here is a tiny http.server serving ``render(snapshot)``, the snapshot changed by
the test; later the same test can point at the real ``membership serve``.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import opshelpers
import pytest

from membership_log.render.exposition import CONTENT_TYPE, render

pytestmark = pytest.mark.e2e

# This module's waits keep the defaults its own copy had: 45 s, and Prometheus asked every
# 0.25 s rather than every 0.1 s.
wait_for = functools.partial(opshelpers.wait_for, timeout=45.0, interval=0.25)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HOSTILE = 'esc\x1b[0m "q" \\ new\nline \udcff'


def node(up: bool = True, flapping: bool | None = None) -> dict:
    return {"up": up, "marked": False, "down_cause": None if up else "failed",
            "incidents": {"failed": 0 if up else 1},
            "downtime_s": 0.0, "last_change_s": None, "flapping": flapping}


class Exporter:
    """Serves ``render(self.snapshot)`` at /metrics on a free 127.0.0.1 port."""

    def __init__(self, snapshot: dict) -> None:
        self.snapshot = snapshot
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 -- http.server's naming
                body = render(exporter.snapshot)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def config_for(exporter: Exporter, alertmanager_url: str) -> str:
    """examples/prometheus.yml with 1s intervals and the test's own addresses."""
    text = (EXAMPLES / "prometheus.yml").read_text()
    for old, new in [("scrape_interval: 15s", "scrape_interval: 1s"),
                     ("evaluation_interval: 15s", "evaluation_interval: 1s"),
                     ('"127.0.0.1:9137"', json.dumps(exporter.address)),
                     ('"127.0.0.1:9093"', json.dumps(alertmanager_url.split("//")[1])),
                     ("- prometheus-rules.yml", f"- {EXAMPLES / 'prometheus-rules.yml'}")]:
        assert old in text, old
        text = text.replace(old, new)
    return text


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]


def test_prometheus_scrapes_the_exposition_and_alerts(prometheus_factory, alertmanager):
    snapshot = {"nodes": {"node1": node(), "node2": node(), HOSTILE: node()},
                "live_nodes": 3, "catalog_nodes": 3,
                "events": [{"observer": "node0", "event": "member-join", "count": 3}],
                "last_event_s": {"node0": time.time()}, "observer": "node0"}
    with Exporter(snapshot) as exporter:
        t0 = time.monotonic()
        prom = prometheus_factory(config_for(exporter, alertmanager.url))

        def node_up(name: str) -> float | None:
            result = prom.query(f'membership_node_up{{node="{name}"}}')
            return float(result[0]["value"][1]) if result else None

        # Prometheus applies new scrape targets on a 5 s tick: the first sample takes ~6 s.
        wait_for("the first scrape", lambda: node_up("node1") == 1)
        t_first = time.monotonic()
        assert prom.query('up{job="membership"}')[0]["value"][1] == "1"
        # A hostile name survives the round trip (as membership_log.core.labels cleans it).
        names = {r["metric"]["node"] for r in prom.query("membership_node_up")}
        assert names == {"node1", "node2", 'esc\x1b[0m "q" \\ new\nline \\xff'}

        exporter.snapshot = {**snapshot, "live_nodes": 2,
                             "nodes": {**snapshot["nodes"], "node1": node(up=False),
                                       "node2": node(flapping=True)}}
        wait_for("node1 down", lambda: node_up("node1") == 0, timeout=30)
        t_down = time.monotonic()

        # The example rules load and evaluate: node1 is pending (for: 1m), node2 flaps.
        groups = get(f"{prom.url}/api/v1/rules")["groups"]
        assert {r["health"] for g in groups for r in g["rules"]} == {"ok"}

        def alert_states() -> dict:
            return {(a["labels"]["alertname"], a["labels"].get("node")): a["state"]
                    for a in get(f"{prom.url}/api/v1/alerts")["alerts"]}

        wait_for("the flapping alert", lambda: alert_states().get(
            ("MembershipNodeFlapping", "node2")) == "firing", timeout=30)
        assert alert_states().get(("MembershipNodeDead", "node1")) == "pending"

        # ... and reaches the real Alertmanager.
        got = wait_for("the alert in Alertmanager", lambda: [
            a for a in alertmanager.alerts()
            if a["labels"].get("alertname") == "MembershipNodeFlapping"], timeout=30)
        assert got[0]["labels"]["node"] == "node2"
        assert got[0]["labels"]["severity"] == "warning"
        assert got[0]["labels"]["instance"] == exporter.address
        print(f"first scrape {t_first - t0:.1f} s, flip seen {t_down - t_first:.1f} s, "
              f"alert in Alertmanager {time.monotonic() - t_down:.1f} s later")
