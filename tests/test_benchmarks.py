"""The benchmarks keep running (quick mode): they print figures; thresholds are not tested
here (timed assertions on a shared machine are noise)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_handler_startup_benchmark_quick_mode():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "handler_startup.py"),
                        "--quick", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    cases = {row["case"]: row for row in doc["rows"]}
    assert doc["rounds"] == 15
    assert cases["bare interpreter (python -c pass)"]["ratio"] == 1.0
    for name in ["handle: 1-member event", "handle: 1,000-member event",
                 "handle: membership-live query"]:
        assert cases[name]["median_ms"] > 0 and cases[name]["ratio"] > 1.0


def test_ship_throughput_benchmark_quick_mode(pg_server):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ship_throughput.py"),
                        "--quick", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["events"] == 20_000 and doc["events_per_s"] > 0 and doc["target"] == 20_000


def test_history_benchmark_quick_mode():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "history.py"), "--quick",
                        "--json", "--points", "5"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    small, large = doc["rows"]
    assert (small["events"], large["events"]) == (2_000, 50_000)
    for row in doc["rows"]:
        assert row["state_at_ms"] > 0 and row["bytes_per_event"] > 0 and row["audit_ms"] > 0
        assert row["replay_peak_rss_mb"] > 0
    assert doc["state_at_ratio"] > 0
