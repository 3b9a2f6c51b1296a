"""Time: a clock that steps back, a log begun while the clock was ahead, a window
backwards (--since after --until), and absurd times.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import cli
from hardeninghelpers import (
    NODE1,
    one_line,
    verify_ok,
)

from membership_log import settings
from membership_log.core.raw import encode_env
from membership_log.history import driver as derive
from membership_log.history import setup as hsetup
from membership_log.history.publish import publisher
from membership_log.stores.node import NODE, NodeStore

pytestmark = pytest.mark.e2e

# == 8. The clock steps back; a window backwards; a spool file nobody can read ===================
# Before: negative availability and durations; --since after --until accepted; an
# undecodable spool file was skipped by every run while verify said "spool empty".

def _stepping_clock_store(base: Path, t0: int) -> None:
    s = settings.resolve(str(base))
    hsetup.init(s, observer="node0", received_us=t0)
    sec = 1_000_000

    def ev(at, kind, member=NODE1):
        return (t0 + at * sec, "node0", "serf",
                encode_env({"SERF_EVENT": kind, "SERF_SELF_NAME": "node0"}), member)

    node2 = b"node2\t192.168.100.52\t\t\n"
    items = [ev(10, "member-join"), ev(100, "member-failed"),
             ev(40, "member-join"),                  # the clock stepped back a minute
             ev(50, "member-failed"), ev(45, "member-join"), ev(20, "member-failed"),
             ev(30, "member-join"), ev(5, "member-failed", node2), ev(6, "member-join", node2),
             ev(1, "member-leave", node2), ev(2, "member-join", node2)]
    with NodeStore(s.sqlite_path) as store:
        with store.write():
            store.append(items)
        derive.catch_up(store, NODE, publisher(s.live_file))


def _sane(doc: dict) -> None:
    for name, n in doc["nodes"].items():
        assert n["downtime_s"] >= 0, (name, n)
        assert n["availability"] is None or 0 <= n["availability"] <= 1, (name, n)
        assert n["mttr_s"] is None or n["mttr_s"] >= 0, (name, n)
        for i in n["incidents"]:
            assert i["duration_s"] is None or i["duration_s"] >= 0, (name, i)


def test_a_clock_that_steps_back_never_gives_negative_figures(membership, base, tmp_path):
    t0 = 1_764_000_000_000_000  # 2025-11-24, in the past
    _stepping_clock_store(base, t0)
    windows = [[], ["--since", "@1"], ["--since", "@3"], ["--until", "@4"],
               ["--since", "@2", "--until", "@6"], ["--since", "2025-11-24T16:00:00"],
               ["--since", "2025-11-24T16:00:10", "--until", "2025-11-24T16:00:45"]]
    for window in windows:
        r = cli(membership, "audit", "--base-dir", base, "--json", *window)
        assert r.returncode == 0, (window, r.stderr)
        doc = json.loads(r.stdout)
        _sane(doc)
        assert doc["since"] <= doc["until"], window
        text = cli(membership, "audit", "--base-dir", base, *window).stdout.decode()
        assert not re.search(r"(?<![\w-])-\d", text), text  # no negative figure anywhere
    for command in (["state", "--at", "2025-11-24T16:00:30"], ["replay"],
                    ["timeline", "-o", tmp_path / "t.svg"]):
        assert cli(membership, *command, "--base-dir", base).returncode == 0
    ET.parse(tmp_path / "t.svg")
    verify_ok(membership, base)


def test_a_log_begun_while_the_clock_was_ahead_can_be_audited(membership, base):
    ahead = (time.time_ns() // 1000) + 3600 * 1_000_000  # an hour ahead, then stepped back
    _stepping_clock_store(base, ahead)
    r = cli(membership, "audit", "--base-dir", base, "--json")
    assert r.returncode == 0, r.stderr
    _sane(json.loads(r.stdout))


@pytest.mark.parametrize("command", ["audit", "replay", "export", "timeline"])
@pytest.mark.parametrize("window", [("2026-01-02", "2026-01-01"), ("@5", "@2"),
                                    ("1h ago", "2h ago")])
def test_since_after_until_is_one_line(membership, handle, base, tmp_path, command, window):
    assert handle("member-update", NODE1).returncode == 0
    out = tmp_path / "t.svg"
    out.write_text("old picture")
    extra = ["-o", out] if command == "timeline" else []
    r = cli(membership, command, "--base-dir", base, "--since", window[0], "--until",
            window[1], *extra)
    err = r.stderr.decode()
    assert r.returncode in (1, 2) and "Traceback" not in err, err
    assert [line for line in err.splitlines() if "after --until" in line], err
    if r.returncode == 1:
        one_line(r)
    assert out.read_text() == "old picture", "a failed timeline leaves the old file as it was"


# == 15. One line, never a traceback; ship --follow rides out an outage ========================
# Before: two ships at once died of an unwrapped UniqueViolation; `rebuild` on a read-only
# store, `audit --since @99999999999999999999999` and `route` on the catalogs of item 2
# crashed; a newer store said "run: membership db upgrade" (which then refused); ship
# --follow exited on a 2 s outage.

@pytest.mark.parametrize("value", ["@99999999999999999999999", "999999999999999999999 w ago",
                                   "99999-01-01", "-1 d ago", "@" + "9" * 5000])
def test_an_absurd_time_is_a_usage_error_not_a_traceback(membership, handle, base, value):
    assert handle("member-join", NODE1).returncode == 0
    for command in (["audit", "--since"], ["replay", "--until"], ["export", "--since"],
                    ["timeline", "-o", base / "t.svg", "--until"], ["state", "--at"]):
        r = cli(membership, *command, value, "--base-dir", base)
        err = r.stderr.decode()
        assert r.returncode == 2 and "Traceback" not in err and r.stdout == b"", err
        # Click's usage header aside, the error itself is one line, and a short one.
        (line,) = [x for x in err.splitlines() if x.startswith("Error:")]
        assert len(line) < 400 and command[-1] in line, line
    assert not (base / "t.svg").exists()
