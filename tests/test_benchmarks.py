"""The benchmarks keep running (quick mode): they print figures; thresholds are not tested
here (timed assertions on a shared machine are noise)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

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


def test_engine_benchmark_quick_mode(pg_server):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine.py"), "--quick",
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    figures = {(row["section"], row["figure"]): row for row in doc["rows"]}
    assert {s for s, _ in figures} == {"node", "retention", "cluster size", "busy cluster",
                                       "central"}
    for row in doc["rows"]:
        assert row["value"] > 0, row
        assert row["met"] is None, "quick sizes give no verdict"
    assert figures[("retention", "file after / before")]["value"] < 1, "compaction shrinks"
