"""Upgrades: every derived table holds the whole history after `init` or the
migrations alone, and a store of a newer release says to upgrade membership-log.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import cli, rows
from hardeninghelpers import (
    NODE1,
    one_line,
    serf,
    verify_ok,
)
from samples import NODES

from membership_log.core.raw import chain_hash, encode_env
from membership_log.stores import setup as admin

pytestmark = pytest.mark.e2e

N0, N1, N2 = NODES


# == 4. An upgrade (or the first run after it) brings every derived table up to date ==============
# tests/test_store.py::test_an_upgrade_brings_every_derived_table_up_to_date covers `db
# upgrade` (incidents after it). Here: `init` on the old store, and the handler's first run
# after the migrations alone (alembic by hand); every derived table, not only incidents.
# Before: the upgraded store reported 0 incidents and 100% availability.

#: The head snapshot the previous release (d5e7341) kept for the log _store_at_0002 builds,
#: exactly as it wrote it (its format, marshal of its fold's state, zlib + base64 here). That
#: release trusted it, so an upgrade found nothing to fold: 0 incidents, 100% availability.
OLD_SNAPSHOT_FORMAT = "marshal4/py3.11/1"
OLD_SNAPSHOT_STATE = (
    "eNrTZH1pzMjAoMn0kokBSDFrsvySMbQ00jM0s9AzNDDQMzWwAlLGhvopRfn5eemJv/hQZV/qqzMw/GKHymLoNsSr25"
    "CAbiO8uo1QdVf/Ys3LT0k10GRFd+Mtht8Gt1gTczLLUouAnmSAKDTEUGhYJACU/W1QJASkXrIACYOVDCuZNFlusZQW"
    "pxb94s9NzU1KLSrOyCzQTckvz3vJDFRShdfJmixFkiAbeZG0lhYUiRHUCADBXW/K")


def _store_at_0002(base: Path, t0: int) -> list[tuple]:
    """A store made before the derived tables existed, holding a failure, an operator mark,
    an observer restart after a gap, and enough events for checkpoints; and the head
    snapshot its release kept (folded up to the last event)."""
    from alembic import command
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{base / 'membership.db'}")
    with engine.begin() as conn:
        command.upgrade(admin._alembic_config(conn), "0002")
    engine.dispose()
    s = 1_000_000
    script = [(t0, "catalog", {}, (base / "catalog.json").read_bytes()),
              (t0, "member-join", {}, b"node0\t192.168.100.50\t\t\n" + NODE1),
              (t0 + 10 * s, "member-failed", {}, NODE1),
              (t0 + 40 * s, "member-join", {}, NODE1),
              (t0 + 50 * s, "user", {"SERF_USER_EVENT": "membership-down",
                                     "SERF_USER_LTIME": "3"}, N2.encode()),
              (t0 + 70 * s, "user", {"SERF_USER_EVENT": "membership-up",
                                     "SERF_USER_LTIME": "4"}, N2.encode())]
    script += [(t0 + (80 + i) * s, "member-update", {}, NODE1) for i in range(300)]
    script += [(t0 + 3600 * s, "member-join", {}, b"node0\t192.168.100.50\t\t\n")]  # restart
    prev = bytes(32)
    out = []
    for seq, (at, kind, extra, stdin) in enumerate(script, 1):
        source = "catalog" if kind == "catalog" else "serf"
        env = b"" if source == "catalog" else encode_env(
            {"SERF_EVENT": kind, "SERF_SELF_NAME": "node0", **extra})
        prev = chain_hash(prev, seq, at, "node0", source, env, stdin)
        out.append((seq, at, "node0", source, env, stdin, prev))
    import base64
    import zlib

    live_then = json.dumps({n: {"serfAddress": n.split(":")[0]} for n in NODES}, indent=2)
    with sqlite3.connect(base / "membership.db") as c:
        c.executemany("INSERT INTO event VALUES (?, ?, ?, ?, ?, ?, ?)", out)
        c.execute("INSERT INTO snapshot (name, seq, format, state, live) VALUES (?, ?, ?, ?, ?)",
                  ("head", len(out), OLD_SNAPSHOT_FORMAT,
                   zlib.decompress(base64.b64decode(OLD_SNAPSHOT_STATE)),
                   (live_then + "\n").encode()))
    return out


@pytest.mark.parametrize("how", ["membership init", "alembic, then the handler"])
def test_after_an_upgrade_every_derived_table_holds_the_whole_history(membership, base, how):
    t0 = 1_700_000_000_000_000
    old = _store_at_0002(base, t0)
    if how == "membership init":
        r = cli(membership, "init", "--base-dir", base)
        assert r.returncode == 0, r.stderr
    else:
        admin.upgrade(f"sqlite:///{base / 'membership.db'}")  # the migrations, nothing else
        assert serf(membership, base, "member-update", NODE1).returncode == 0
    with sqlite3.connect(base / "membership.db") as c:
        assert c.execute("SELECT seq, received_us, observer, source, env, stdin, hash FROM "
                         "event WHERE seq <= ? ORDER BY seq", (len(old),)).fetchall() == old
        checkpoints = [s for (s,) in c.execute("SELECT seq FROM checkpoint ORDER BY seq")]
        sessions = c.execute("SELECT count(*) FROM observer_session").fetchone()[0]
        snapshot = c.execute("SELECT seq FROM snapshot").fetchone()[0]
    assert checkpoints[:1] == [250] and sessions == 2
    assert snapshot == rows(base)[-1][0]
    doc = json.loads(cli(membership, "audit", "--base-dir", base, "--json", "--until",
                         f"@{len(old)}").stdout)
    (failed,) = doc["nodes"][N1]["incidents"]
    assert (failed["down_seq"], failed["up_seq"], failed["cause"]) == (3, 4, "failed")
    assert failed["duration_s"] == 30.0
    (marked,) = doc["nodes"][N2]["incidents"]
    assert (marked["cause"], marked["duration_s"]) == ("operator", 20.0)
    assert doc["nodes"][N1]["availability"] < 1
    assert doc["observers"]["node0"]["unobserved"], "the restart after a gap is known"
    verify_ok(membership, base)


# == 15. One line, never a traceback; ship --follow rides out an outage ========================
# Before: two ships at once died of an unwrapped UniqueViolation; `rebuild` on a read-only
# store, `audit --since @99999999999999999999999` and `route` on the catalogs of item 2
# crashed; a newer store said "run: membership db upgrade" (which then refused); ship
# --follow exited on a 2 s outage.

def test_a_store_of_a_newer_release_says_to_upgrade_membership_log(membership, handle, base,
                                                                      tmp_path):
    assert handle("member-join", NODE1).returncode == 0
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("UPDATE alembic_version SET version_num = '0099'")
    for command in (["state"], ["audit"], ["verify"], ["rebuild"], ["db", "upgrade"], ["init"],
                    ["export"], ["timeline", "-o", tmp_path / "t.svg"]):
        err = one_line(cli(membership, *command, "--base-dir", base))
        assert "upgrade membership-log" in err and "run: membership db upgrade" not in err, err
    r = handle("member-failed", NODE1)
    assert r.returncode == 0 and b"spooled" in r.stderr
    assert b"upgrade membership-log" in r.stderr and b"run: membership db upgrade" not in \
        r.stderr
