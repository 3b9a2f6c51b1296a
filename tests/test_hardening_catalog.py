"""A catalog that cannot be parsed (nested 5,000 deep, a 5,000-digit port), a FIFO or
/dev/zero at catalog.json, and the catalog read kept out of the store's write lock.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import sys
import time

import pytest
from conftest import cli, live, rows
from hardeninghelpers import (
    NODE1,
    live_query,
    one_line,
    serf,
    verify_ok,
)
from samples import CATALOG_V2, NODES

pytestmark = pytest.mark.e2e

N0, N1, N2 = NODES


# == 2. A catalog that cannot be parsed never freezes anything ===================================
# Before: RecursionError / ValueError from int() in every catch-up once such a catalog was
# recorded: the live file froze for good, every read command crashed, queries got no
# answer, and in a fresh base dir the first event was lost.

def _deep_catalog() -> bytes:
    return b'{"version": 2, "datasets": {"D": {"replicas": ' + b"[" * 5000 + b"]" * 5000 + b"}}}"


def _long_port_catalog() -> bytes:
    doc = json.loads(json.dumps(CATALOG_V2))
    doc["datasets"]["Default"]["replicas"].append({"slices": [{"label": "slice000", "volume": {
        "address": "192.168.100.53:" + "9" * 5000 + "/droonga.000"}}]})
    return json.dumps(doc).encode()


BAD_CATALOGS = {"nested 5,000 deep": _deep_catalog, "a 5,000-digit port": _long_port_catalog}


@pytest.mark.parametrize("case", sorted(BAD_CATALOGS))
def test_a_hostile_catalog_is_recorded_warned_once_and_stops_nothing(membership, base,
                                                                       tmp_path, case):
    data = BAD_CATALOGS[case]()
    assert serf(membership, base, "member-join", NODE1).returncode == 0
    (base / "catalog.json").write_bytes(data)
    r = serf(membership, base, "member-failed", NODE1)
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1 and b"catalog" in r.stderr, r.stderr
    assert len(r.stderr) < 400, "the warning quotes the bad value cut short"
    recorded = rows(base)
    assert recorded[-2][1] == "catalog" and recorded[-2][4] == data, "recorded byte for byte"
    assert list(live(base)) == [N0, N2], "the live file still follows the events"
    r = serf(membership, base, "member-join", NODE1)
    assert r.returncode == 0 and r.stderr == b"", "warned once, not on every event"
    assert list(live(base)) == NODES
    r = live_query(membership, base)
    assert r.returncode == 0 and r.stderr == b"" and json.loads(r.stdout)["live"] == NODES

    for command in (["state"], ["state", "--at", "@2"], ["state", "--json"], ["replay"],
                    ["replay", "--json"], ["audit"], ["audit", "--json"], ["verify"],
                    ["rebuild"], ["timeline", "-o", tmp_path / "t.svg"]):
        r = cli(membership, *command, "--base-dir", base)
        assert r.returncode == 0 and r.stderr == b"", (command, r.stderr[-2000:])
    r = cli(membership, "route", "--base-dir", base)
    if r.returncode == 0:
        assert b"dataset Default" in r.stdout and r.stderr == b""
    else:
        one_line(r)
    verify_ok(membership, base)

    # Fixed: the new catalog is taken at the next event.
    (base / "catalog.json").write_text(json.dumps({"version": 1, "zones": [N1]}))
    assert serf(membership, base, "member-update", NODE1).returncode == 0
    assert list(live(base)) == [N1]

    # A fresh base dir with only such a catalog: the first event is not lost.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "catalog.json").write_bytes(data)
    r = serf(membership, fresh, "member-join", b"node9\t10.0.0.9\t\t\n")
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1, r.stderr
    assert [(s, i) for _, s, _, _, i in rows(fresh)] == [("catalog", data),
                                                          ("serf", b"node9\t10.0.0.9\t\t\n")]
    assert live(fresh), "a live file was written"
    r = live_query(membership, fresh)
    assert r.returncode == 0 and r.stderr == b"" and json.loads(r.stdout)["seq"] == 3
    verify_ok(membership, fresh)


# == 13. The catalog read cannot hang or bloat recording ========================================
# Before: a FIFO at catalog.json blocked the handler forever inside BEGIN IMMEDIATE (holding
# the store's write lock); a symlink to /dev/zero grew its memory without bound.

def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("store", ["fresh base dir", "existing store"])
def test_a_fifo_or_dev_zero_at_the_catalog_cannot_hang_or_bloat_the_handler(
        membership, base, kind, store):
    if store == "existing store":
        assert serf(membership, base, "member-join", NODE1).returncode == 0
    (base / "catalog.json").unlink()
    if kind == "fifo":
        os.mkfifo(base / "catalog.json")
    else:
        (base / "catalog.json").symlink_to("/dev/zero")
    start = time.perf_counter()
    r = serf(membership, base, "member-failed", NODE1, timeout=5, preexec_fn=_limit_memory)
    took = time.perf_counter() - start
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1, r.stderr
    assert b"not a regular file" in r.stderr
    assert rows(base)[-1][4] == NODE1 and took < 5
    r = serf(membership, base, "member-join", NODE1, timeout=5, preexec_fn=_limit_memory)
    assert r.returncode == 0 and r.stderr == b"", "warned once"
    r = live_query(membership, base)
    assert r.returncode == 0 and r.stderr == b"" and json.loads(r.stdout)["seq"] == \
        rows(base)[-1][0]
    verify_ok(membership, base)


def test_the_catalog_is_never_read_while_the_store_is_write_locked(base, monkeypatch):
    """handler.py reads the catalog before it takes the store's write lock (and so does the
    set-up it runs in a fresh base dir): a slow catalog cannot stall other handlers."""
    from membership_log import handler
    from membership_log.stores import files

    real = files.read_regular
    seen = []

    def spy(path, limit):
        db = base / "membership.db"
        if db.exists():
            probe = sqlite3.connect(db, timeout=0, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")  # fails at once if a writer holds the lock
                probe.execute("ROLLBACK")
                seen.append("unlocked")
            except sqlite3.OperationalError as e:
                seen.append(f"locked: {e}")
            finally:
                probe.close()
        else:
            seen.append("no store yet")
        return real(path, limit)

    monkeypatch.setattr(files, "read_regular", spy)

    class Stdin:
        buffer = __import__("io").BytesIO(NODE1)

        @staticmethod
        def isatty():
            return False

    monkeypatch.setenv("SERF_EVENT", "member-failed")
    monkeypatch.setenv("SERF_SELF_NAME", "node0")
    for _ in range(2):  # the set-up, then an ordinary run
        Stdin.buffer.seek(0)
        monkeypatch.setattr(sys, "stdin", Stdin)
        assert handler.main(["--base-dir", str(base)]) == 0
    assert seen and all(s in ("unlocked", "no store yet") for s in seen), seen
    assert seen.count("unlocked") >= 2


# == 15. One line, never a traceback; ship --follow rides out an outage ========================
# Before: two ships at once died of an unwrapped UniqueViolation; `rebuild` on a read-only
# store, `audit --since @99999999999999999999999` and `route` on the catalogs of item 2
# crashed; a newer store said "run: membership db upgrade" (which then refused); ship
# --follow exited on a 2 s outage.

@pytest.mark.parametrize("case", sorted(BAD_CATALOGS))
def test_route_on_a_hostile_catalog_is_one_line_or_an_answer(membership, handle, base, case):
    assert handle("member-join", NODE1).returncode == 0
    (base / "catalog.json").write_bytes(BAD_CATALOGS[case]())
    for extra in ([], ["--json"], ["--dataset", "Default"]):
        r = cli(membership, "route", "--base-dir", base, *extra)
        if r.returncode == 0:
            assert r.stderr == b"" and b"Default" in r.stdout
        else:
            err = one_line(r)
            assert "catalog" in err or "dataset" in err
