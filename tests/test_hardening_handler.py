"""What a hostile cluster sends the handler: an observer name that is not UTF-8,
operator marks out of Lamport order and across an agent restart, names that would
blow Serf's 1,024-byte answer, and garbage events.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time

import pytest
from conftest import cli, live, rows
from hardeninghelpers import (
    NODE1,
    head_state,
    live_query,
    replay_json,
    serf,
    verify_ok,
)
from samples import NODES

from membership_log.core import fold as project
from membership_log.version import SCHEMA_REVISION

pytestmark = pytest.mark.e2e

N0, N1, N2 = NODES


# == 1. Invalid UTF-8 in SERF_SELF_NAME ==========================================================
# Before: UnicodeEncodeError in the append (the raw name went into a TEXT column), a traceback,
# exit 1, nothing recorded or spooled; a query got the traceback as its answer; once spooled,
# such an event killed every later run.

BAD_NAME = b"node\xff\xfe0"


def test_an_invalid_utf8_observer_is_recorded_spooled_taken_in_and_answered(membership, base):
    r = serf(membership, base, "member-failed", NODE1, BAD_NAME)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    (seq, source, observer, env, stdin) = rows(base)[-1]
    assert source == "serf" and stdin == NODE1
    assert b"SERF_SELF_NAME=" + BAD_NAME in env.split(b"\0"), "the exact bytes are recorded"
    assert observer == "node\\xff\\xfe0", "the observer column shows the bytes as escapes"
    assert list(live(base)) == [N0, N2]

    # Spooled (the store cannot take it: another schema revision), then taken in later.
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("UPDATE alembic_version SET version_num = '0000'")
    r = serf(membership, base, "member-join", NODE1, BAD_NAME)
    assert r.returncode == 0 and b"spooled" in r.stderr and r.stderr.count(b"\n") == 1
    assert len(list((base / "spool").glob("*.event"))) == 1
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("UPDATE alembic_version SET version_num = ?", (SCHEMA_REVISION,))
    r = serf(membership, base, "member-update", NODE1, BAD_NAME)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert list((base / "spool").glob("*.event")) == []
    taken = rows(base)[-2]
    assert b"SERF_EVENT=member-join" in taken[3].split(b"\0")
    assert b"SERF_SELF_NAME=" + BAD_NAME in taken[3].split(b"\0")
    assert list(live(base)) == NODES

    # A query from such a node is answered on stdout, with nothing on stderr.
    r = live_query(membership, base, BAD_NAME)
    assert r.returncode == 0 and r.stderr == b""
    answer = json.loads(r.stdout)
    assert answer["observer"] == "node\\xff\\xfe0" and answer["live"] == NODES
    assert b"SERF_SELF_NAME=" + BAD_NAME in rows(base)[-1][3].split(b"\0")
    verify_ok(membership, base)


# == 5. Operator marks follow Lamport time, within one session of the observer's agent ===========
# Before: marks followed arrival order (up@6 then down@5 left the node DEAD), and after a
# cluster restart a new membership-down at ltime 1 was called a duplicate.

def _mark(membership, base, kind: str, ltime: int, payload: bytes = b"node1\n",
          how: str = "user"):
    if how == "user":
        variables = {"SERF_USER_EVENT": kind, "SERF_USER_LTIME": str(ltime)}
    else:
        variables = {"SERF_QUERY_NAME": kind, "SERF_QUERY_LTIME": str(ltime)}
    r = serf(membership, base, how, payload, **variables)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    return rows(base)[-1][0]


@pytest.mark.parametrize("how", ["user", "query"])
def test_marks_follow_lamport_time_and_restart_with_the_observers_agent(membership, base,
                                                                         how):
    assert serf(membership, base, "member-join", NODE1).returncode == 0
    up6 = _mark(membership, base, "membership-up", 6, how=how)   # delivered first (coalescer)
    down5 = _mark(membership, base, "membership-down", 5, how=how)
    assert list(live(base)) == NODES, "the up at ltime 6 wins over the down at ltime 5"
    again = _mark(membership, base, "membership-up", 6, how=how)  # Serf delivers it again
    # The observer's own agent restarts: Lamport times start over.
    assert serf(membership, base, "member-join", b"node0\t192.168.100.50\t\t\n").returncode == 0
    down1 = _mark(membership, base, "membership-down", 1, how=how)
    assert list(live(base)) == [N0, N2], "a mark at ltime 1 after the restart is applied"
    redelivered = _mark(membership, base, "membership-down", 1, how=how)
    up2 = _mark(membership, base, "membership-up", 2, how=how)
    assert list(live(base)) == NODES
    lines = {x["seq"]: x for x in replay_json(membership, base)}
    assert lines[up6]["changes"] == [] and not lines[up6]["duplicate"]
    assert lines[down5]["changes"] == [] and not lines[down5]["duplicate"]
    assert lines[again]["duplicate"] is True
    assert lines[down1]["ltime"] == 1 and lines[down1]["duplicate"] is False
    assert lines[down1]["changes"] == [{"node": N1, "from": "live", "to": "dead"}]
    assert lines[redelivered]["duplicate"] is True and lines[redelivered]["changes"] == []
    assert lines[up2]["changes"] == [{"node": N1, "from": "dead", "to": "live"}]
    state = json.loads(cli(membership, "state", "--base-dir", base, "--json",
                           "--at", f"@{down1}").stdout)
    assert state["nodes"][N1]["marked"] is True and state["nodes"][N1]["live"] is False
    verify_ok(membership, base)


# == 6. The membership-live answer never exceeds Serf's 1,024 bytes ===============================
# Before: the fallback cut the observer's name to 200 characters, but each non-ASCII one is
# \u-escaped: 300 x 'é' gave 1,319 bytes, 200 emoji 2,519, and Serf dropped the answer.

@pytest.mark.parametrize("name,nodes", [("é" * 300, 3), ("é" * 300, 200), ("😀" * 200, 3),
                                        ("😀" * 200, 200), ("x" * 5000, 200)])
def test_the_live_answer_fits_in_1024_bytes_whatever_the_name(membership, base, name, nodes):
    zones = [f"10.0.{i // 250}.{i % 250 + 1}:10031/droonga" for i in range(nodes)]
    (base / "catalog.json").write_text(json.dumps({"version": 1, "zones": zones}))
    r = live_query(membership, base, name.encode())
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert len(r.stdout) <= 1024, len(r.stdout)
    answer = json.loads(r.stdout)
    assert name.startswith(answer["observer"]) and answer["observer"], "a prefix of the name"
    live_bytes = (base / "live-nodes.json").read_bytes()
    assert answer["live_count"] == nodes
    assert answer["live_sha256"] == hashlib.sha256(live_bytes).hexdigest()
    assert answer["seq"] == rows(base)[-1][0]


# == 14. One bad event cannot slow every later event ===========================================
# Before: 50 MB of random bytes as a member-join became 108,180 junk members kept in the
# state (later one-member events: 0.02 s / 11 MB -> 1.9 s / 258 MB); a 129 KB
# membership-down naming 20,000 unknown names made every later run take 1.3-1.9 s.

def _median_event_time(membership, base, n: int = 7) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        assert serf(membership, base, "member-update", NODE1).returncode == 0
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2]


def test_garbage_is_recorded_raw_and_folded_as_nothing(membership, base):
    assert serf(membership, base, "member-join", NODE1).returncode == 0
    before_state = head_state(base)
    before = _median_event_time(membership, base)
    junk = random.Random(5).randbytes(50_000_000)
    start = time.perf_counter()
    r = serf(membership, base, "member-join", junk)
    took_junk = time.perf_counter() - start
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1, r.stderr
    with sqlite3.connect(base / "membership.db") as c:
        n, digest = c.execute("SELECT length(stdin), stdin FROM event ORDER BY seq DESC "
                              "LIMIT 1").fetchone()
    assert n == len(junk) and hashlib.sha256(digest).digest() == hashlib.sha256(junk).digest()
    del digest
    after_junk_state = head_state(base)
    assert after_junk_state.members.keys() == before_state.members.keys(), "folded as nothing"
    after_junk = _median_event_time(membership, base)

    names = " ".join(f"n{i}" for i in range(20_000)).encode()  # 128,889 bytes
    r = serf(membership, base, "user", names, SERF_USER_EVENT="membership-down",
             SERF_USER_LTIME="7")
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1 and b"folded as nothing" in \
        r.stderr, r.stderr
    assert rows(base)[-1][4] == names
    state = head_state(base)
    assert state.marks == after_junk_state.marks == {}, "no mark from the oversized payload"
    assert len(state.members) <= project.MAX_MEMBERS and len(state.marks) <= project.MAX_MARKS
    after_down = _median_event_time(membership, base)
    assert list(live(base)) == NODES
    print(f"\none-member event, median of 7: {1000 * before:.0f} ms before; the 50 MB event "
          f"took {took_junk:.2f} s; {1000 * after_junk:.0f} ms after it; "
          f"{1000 * after_down:.0f} ms after the 20,000-name membership-down")
    verify_ok(membership, base)
