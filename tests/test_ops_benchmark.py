"""benchmarks/ops.py keeps running (quick mode, with the real Alertmanager): it prints
figures; no threshold is tested here (timed assertions on a shared machine are noise)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from realservers import require

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def test_ops_benchmark_quick_mode():
    require("alertmanager", "prometheus-alertmanager", package="prometheus-alertmanager")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ops.py"), "--quick",
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["events"] == 20_000
    sections = {row["section"] for row in doc["rows"]}
    assert sections == {"store", "scrape (in-process)", "API (in-process)", "scrape (HTTP)",
                        "handler", "alerts", "handler -> Alertmanager"}
    for row in doc["rows"]:
        assert row["value"] > 0, row
        assert row["met"] is None, "quick sizes give no verdict"
