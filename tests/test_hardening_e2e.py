"""Issue 11, item by item, through the real handler and the real CLI (subprocesses, real
SQLite files, the real PostgreSQL server): what a hostile or unlucky cluster does to the
handler and the store. The pure-level halves of these findings are in
test_hardening_pure.py; here each finding is reproduced end to end, as an operator or Serf
would meet it. Trials print their figures (run with -s to see them)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import resource
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from samples import CATALOG_V2, NODES
from test_reliability import ReadOnly
from typer.testing import CliRunner

from membership_log import settings
from membership_log.cli import app
from membership_log.core import codec
from membership_log.core import fold as project
from membership_log.core.raw import chain_hash, encode_env
from membership_log.history import driver as derive
from membership_log.history import setup as hsetup
from membership_log.history.publish import publisher
from membership_log.stores import setup as admin
from membership_log.stores import spool
from membership_log.stores.connect import driver_url
from membership_log.stores.node import NODE, NodeStore
from membership_log.version import SCHEMA_REVISION

runner = CliRunner()
N0, N1, N2 = NODES
NODE1 = b"node1\t192.168.100.51\t\t\n"


# -- helpers ------------------------------------------------------------------------------------


def cli(membership: str, *args: str, input: bytes | None = None, timeout: float = 120,
        **kw) -> subprocess.CompletedProcess:
    return subprocess.run([membership, *map(str, args)], input=input, capture_output=True,
                          timeout=timeout, **kw)


def serf_env(observer: str | bytes = "node0", **variables) -> dict[bytes, bytes]:
    """The environment Serf gives a handler, as bytes (so any value, invalid UTF-8 included,
    reaches the process exactly): this process's own minus SERF_*, plus the variables."""
    env = {k: v for k, v in os.environb.items() if not k.startswith(b"SERF_")}

    def b(v):
        return v if isinstance(v, bytes) else str(v).encode()

    env[b"SERF_SELF_NAME"] = b(observer)
    env.update({b(k): b(v) for k, v in variables.items()})
    return env


def serf(membership: str, base, event: str | None, stdin: bytes = b"",
         observer: str | bytes = "node0", timeout: float = 60, preexec_fn=None,
         **variables) -> subprocess.CompletedProcess:
    """One ``membership handle`` run as Serf makes it."""
    if event is not None:
        variables["SERF_EVENT"] = event
    return subprocess.run([membership, "handle", "--base-dir", str(base)], input=stdin,
                          env=serf_env(observer, **variables), capture_output=True,
                          timeout=timeout, preexec_fn=preexec_fn)


def live_query(membership: str, base, observer: str | bytes = "node0", ltime: int = 1):
    return serf(membership, base, "query", b"", observer, SERF_QUERY_NAME="membership-live",
                SERF_QUERY_LTIME=str(ltime))


def one_line(r: subprocess.CompletedProcess, code: int = 1) -> str:
    """Assert ``r`` failed with exactly one ``membership: ...`` line on stderr, nothing on
    stdout, no traceback; return the line."""
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == code, (r.returncode, r.stdout[-500:], err[-2000:])
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("membership: "), err
    assert r.stdout == b"", r.stdout[:500]
    return err


def rows(base) -> list[tuple]:
    with sqlite3.connect(Path(base) / "membership.db") as c:
        return c.execute("SELECT seq, source, observer, env, stdin FROM event ORDER BY seq"
                         ).fetchall()


def live(base) -> dict:
    return json.loads((Path(base) / "live-nodes.json").read_bytes())


def verify_ok(membership: str, base) -> str:
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 0 and b"FAILED" not in r.stdout, r.stdout + r.stderr
    return r.stdout.decode()


def head_state(base) -> project.State:
    """The fold's state as the store keeps it (the head snapshot), read as the handler does."""
    with NodeStore(str(Path(base) / "membership.db")) as store:
        snap = store.snapshot(NODE)
    state = codec.decode_state(snap[1], bytes(snap[2]))
    assert state is not None
    return state


def replay_json(membership: str, base) -> list[dict]:
    r = cli(membership, "replay", "--base-dir", base, "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def with_umask_0():
    os.umask(0)


# == 1. Invalid UTF-8 in SERF_SELF_NAME ==========================================================
# Before: UnicodeEncodeError in the append (the raw name went into a TEXT column), a traceback,
# exit 1, nothing recorded or spooled; a query got the traceback as its answer; once spooled,
# such an event killed every later run.

BAD_NAME = b"node\xff\xfe0"


def test_01_an_invalid_utf8_observer_is_recorded_spooled_taken_in_and_answered(membership, base):
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
def test_02_a_hostile_catalog_is_recorded_warned_once_and_stops_nothing(membership, base,
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


# == 3. Spool intake is idempotent under kill -9 ================================================
# Before: intake committed, then unlinked the files one by one; killed in between, the next
# run took the same files in again (2,649 duplicates in one trial) and verify said ok.

SPOOLED = 600


def _fill_spool(base: Path, trial: int) -> list[bytes]:
    """SPOOLED spool files, as spool.put writes them (without its fsyncs: set-up only)."""
    directory = base / "spool"
    directory.mkdir(mode=0o700, exist_ok=True)
    env = encode_env({"SERF_EVENT": "member-join", "SERF_SELF_NAME": "node0"})
    stdins = []
    for i in range(SPOOLED):
        stdin = f"s{trial}-{i}\t10.3.{i // 250}.{i % 250}\t\t\n".encode()
        item = (1_700_000_000_000_000 + i, "node0", "serf", env, stdin)
        (directory / f"{item[0]:020d}-1-{i:08x}{spool.SUFFIX}").write_bytes(spool.encode(item))
        stdins.append(stdin)
    return stdins


def test_03_spool_intake_killed_at_random_moments_takes_nothing_in_twice(membership, tmp_path):
    template = tmp_path / "template"
    template.mkdir()
    assert serf(membership, template, "member-join", b"seed\t10.0.0.1\t\t\n").returncode == 0
    argv = [membership, "handle", "--base-dir"]
    env = serf_env(SERF_EVENT="member-update")

    # How long a whole intake takes here and now, so the kills land inside it.
    full = []
    for k in range(3):
        b = tmp_path / f"full{k}"
        shutil.copytree(template, b)
        _fill_spool(b, 1000 + k)
        start = time.perf_counter()
        r = subprocess.run([*argv, str(b)], input=b"z\t10.0.0.9\t\t\n", env=env,
                           capture_output=True, timeout=60)
        full.append(time.perf_counter() - start)
        assert r.returncode == 0 and r.stderr == b"", r.stderr
    window = 1.3 * max(full)
    rng = random.Random(11)
    trials, after_commit, duplicates = 50, 0, 0
    for trial in range(trials):
        b = tmp_path / f"t{trial}"
        shutil.copytree(template, b)
        stdins = _fill_spool(b, trial)
        first = min((b / "spool").glob("*.event"))
        p = subprocess.Popen([*argv, str(b)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        p.stdin.write(b"z\t10.0.0.9\t\t\n")
        p.stdin.close()
        if trial % 2:  # anywhere in the run
            time.sleep(rng.uniform(0, window))
        else:  # while the files are being deleted: after the commit, before the last unlink
            deadline = time.monotonic() + 10
            while first.exists() and p.poll() is None and time.monotonic() < deadline:
                pass
            time.sleep(rng.uniform(0, 0.003))
        p.kill()
        p.wait()
        with sqlite3.connect(b / "membership.db") as c:
            taken = c.execute("SELECT count(*) FROM spool_intake").fetchone()[0]
        left = len(list((b / "spool").glob("*.event")))
        after_commit += bool(taken and left)
        r = subprocess.run([*argv, str(b)], input=b"z\t10.0.0.9\t\t\n", env=env,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        with sqlite3.connect(b / "membership.db") as c:
            got = [bytes(s) for (s,) in c.execute("SELECT stdin FROM event WHERE source = "
                                                  "'serf' ORDER BY seq")]
        mine = [s for s in got if s.startswith(f"s{trial}-".encode())]
        duplicates += len(mine) - len(set(mine))
        assert sorted(set(mine)) == sorted(stdins), f"trial {trial}: an event was lost"
        assert list((b / "spool").glob("*.event")) == []
        v = runner.invoke(app, ["verify", "--base-dir", str(b)])
        assert v.exit_code == 0, f"trial {trial}: {v.output}"
        shutil.rmtree(b)
    print(f"\nspool intake: {trials} trials of {SPOOLED} spooled events, a whole intake "
          f"{1000 * min(full):.0f}-{1000 * max(full):.0f} ms; {after_commit} kills landed "
          f"after the commit with spool files left behind; duplicates: {duplicates}")
    assert duplicates == 0
    assert after_commit >= 10, "the kills must land between the commit and the last unlink"


def test_03_verify_does_not_count_spool_files_already_taken_in(membership, handle, base):
    assert handle("member-join", NODE1).returncode == 0
    with ReadOnly(base / "membership.db"):
        assert b"spooled" in handle("member-failed", NODE1).stderr
    (spooled,) = (base / "spool").glob("*.event")
    data = spooled.read_bytes()
    assert handle("member-update", NODE1).returncode == 0  # takes it in, deletes the file
    spooled.write_bytes(data)  # as if killed between the commit and the unlink
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 0 and b"wait in the spool" not in r.stdout, r.stdout


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
def test_04_after_an_upgrade_every_derived_table_holds_the_whole_history(membership, base, how):
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
def test_05_marks_follow_lamport_time_and_restart_with_the_observers_agent(membership, base,
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
def test_06_the_live_answer_fits_in_1024_bytes_whatever_the_name(membership, base, name, nodes):
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


# == 7. verify does not cry wolf =================================================================
# Before: with handlers running it reported "derived incidents differ" in 2 of 40 runs (it
# did not read one consistent snapshot); after kill -9 during `rebuild` it failed instead of
# saying that derived state lags.

def test_07_verify_while_eight_handlers_run_raises_no_false_alarm(membership, base):
    (base / "catalog.json").unlink()  # members are the nodes: most events change the file
    assert serf(membership, base, "member-join", b"m0\t10.2.0.0\t\t\n", "w0").returncode == 0
    stop = threading.Event()
    runs, failures = [0] * 8, []

    def worker(w: int) -> None:
        rng = random.Random(w)
        while not stop.is_set():
            m = rng.randrange(20)
            r = serf(membership, base, rng.choice(["member-join", "member-failed"]),
                     f"m{m}\t10.2.0.{m}\t\t\n".encode(), f"w{w}")
            runs[w] += 1
            if r.returncode != 0 or r.stderr:
                failures.append(r.stderr[:300])

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    outputs = []
    try:
        time.sleep(0.5)
        for _ in range(40):
            outputs.append(runner.invoke(app, ["verify", "--base-dir", str(base)]))
            time.sleep(0.15)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    alarms = [o.output for o in outputs if o.exit_code != 0 or "FAILED" in o.output]
    print(f"\nverify under load: 40 runs beside 8 handler processes ({sum(runs)} handler runs "
          f"meanwhile); false alarms: {len(alarms)}")
    assert alarms == [], alarms[:3]
    assert verify_ok(membership, base)


def test_07_verify_accepts_a_live_file_written_by_a_handler_after_its_snapshot(membership,
                                                                             base, monkeypatch):
    """The race above, made deterministic: a real handler run lands exactly between verify's
    read transaction and its reading of the live file."""
    from membership_log.history import integrity
    from membership_log.stores import files

    assert serf(membership, base, "member-join", NODE1).returncode == 0
    real_read = files.read_bytes
    ran = []

    def read_after_a_handler_ran(path):
        if not ran:
            ran.append(serf(membership, base, "member-failed", NODE1).returncode)
        return real_read(path)

    monkeypatch.setattr(integrity.files, "read_bytes", read_after_a_handler_ran)
    report = integrity.verify(settings.resolve(str(base)))
    assert ran == [0]
    assert report.problems == [], report.problems


def test_07_kill_9_during_rebuild_of_a_long_log_leaves_lag_never_failure(membership, tmp_path):
    """120,000 events: six chunks of the rebuild's 20,000, so a kill lands between them."""
    d = tmp_path / "big"
    r = subprocess.run([sys.executable, "-m", "membership_log.demo.synthetic", "--base-dir", str(d),
                        "--events", "120000"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    start = time.perf_counter()
    r = cli(membership, "rebuild", "--base-dir", d)
    whole = time.perf_counter() - start
    assert r.returncode == 0, r.stderr
    rng = random.Random(7)
    seen = {"ok": 0, "lag": 0}
    for trial in range(5):
        p = subprocess.Popen([membership, "rebuild", "--base-dir", str(d)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.9) * whole)
        p.kill()
        p.wait()
        r = cli(membership, "verify", "--base-dir", d)
        out = r.stdout.decode()
        assert r.returncode == 0 and "FAILED" not in out, f"trial {trial}: {out}{r.stderr}"
        seen["lag" if "not folded yet" in out else "ok"] += 1
    print(f"\nrebuild of 120,000 events ({whole:.1f} s) killed 5 times: verify said ok "
          f"{seen['ok']} time(s), 'derived state lags' {seen['lag']} time(s), FAILED never")
    assert seen["lag"] >= 1, "at least one kill must land mid-rebuild"
    assert cli(membership, "rebuild", "--base-dir", d).returncode == 0
    assert "not folded yet" not in verify_ok(membership, d)


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


def test_08_a_clock_that_steps_back_never_gives_negative_figures(membership, base, tmp_path):
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


def test_08_a_log_begun_while_the_clock_was_ahead_can_be_audited(membership, base):
    ahead = (time.time_ns() // 1000) + 3600 * 1_000_000  # an hour ahead, then stepped back
    _stepping_clock_store(base, ahead)
    r = cli(membership, "audit", "--base-dir", base, "--json")
    assert r.returncode == 0, r.stderr
    _sane(json.loads(r.stdout))


@pytest.mark.parametrize("command", ["audit", "replay", "export", "timeline"])
@pytest.mark.parametrize("window", [("2026-01-02", "2026-01-01"), ("@5", "@2"),
                                    ("1h ago", "2h ago")])
def test_08_since_after_until_is_one_line(membership, handle, base, tmp_path, command, window):
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


def test_08_an_undecodable_spool_file_fails_verify_and_is_moved_aside(membership, handle, base):
    assert handle("member-join", NODE1).returncode == 0
    (base / "spool").mkdir(mode=0o700)
    bad = base / "spool" / f"{1:020d}-1-deadbeef{spool.SUFFIX}"
    bad.write_bytes(spool.MAGIC + b"5:12")  # truncated
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 1
    assert b"FAILED: 1 spool file(s)" in r.stdout and b"cannot be read" in r.stdout
    r = handle("member-failed", NODE1)
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1, r.stderr
    assert bad.name.encode() in r.stderr and b"unreadable" in r.stderr
    moved = base / "spool" / "unreadable" / bad.name
    assert not bad.exists() and moved.read_bytes() == spool.MAGIC + b"5:12"
    assert list(handle.live()) == [N0, N2], "the event itself went in as usual"
    assert handle("member-join", NODE1).stderr == b"", "moved once, reported once"
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 1 and b"cannot be read" in r.stdout, "it still needs an operator"
    moved.unlink()
    verify_ok(membership, base)


def test_08_verify_names_the_unreadable_spool_file(membership, handle, base):
    assert handle("member-join", NODE1).returncode == 0
    (base / "spool").mkdir(mode=0o700)
    bad = base / "spool" / f"{1:020d}-1-deadbeef{spool.SUFFIX}"
    bad.write_bytes(b"not a spool file")
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 1 and bad.name.encode() in r.stdout, r.stdout


def test_08_a_spool_file_that_cannot_be_moved_aside_is_never_taken_in_twice(membership, handle,
                                                                            base):
    """The move to unreadable/ fails (a file in the way): the event that was just committed
    must not be spooled a second time on top of it."""
    assert handle("member-join", NODE1).returncode == 0
    (base / "spool").mkdir(mode=0o700)
    (base / "spool" / f"{1:020d}-1-deadbeef{spool.SUFFIX}").write_bytes(b"garbage")
    (base / "spool" / "unreadable").write_bytes(b"in the way")
    item = (1_700_000_000_000_000, "node0", "serf",
            encode_env({"SERF_EVENT": "member-leave", "SERF_SELF_NAME": "node0"}),
            b"node2\t192.168.100.52\t\t\n")
    spool.put(str(base / "spool"), item)
    r = handle("member-failed", NODE1)
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1 and b"could not be moved" in \
        r.stderr, r.stderr
    assert handle("member-update", NODE1).returncode == 0
    kinds = [json.loads(x)["event"] for x in cli(membership, "replay", "--base-dir", base,
                                                 "--json").stdout.splitlines()]
    assert kinds == ["catalog", "member-join", "member-leave", "member-failed",
                     "member-update"], kinds
    assert list(handle.live()) == [N0]


# == 9. Passwords never echoed ==================================================================
# Before: the URL, password included, went into the error line of every command.

SECRET = b"s3cretPW"
BAD_URLS = [
    "postgresql://u:s3cretPW@127.0.0.1:notaport/db",
    "foo://u:s3cretPW@h/db",
    "mysql://u:s3cretPW@h/db",
    "postgresql://u:s3cretPW@127.0.0.1:1/db",
    "postgresql://u@127.0.0.1:1/db?password=s3cretPW",
    "postgresql://nobody:s3cretPW@127.0.0.1:5432/nosuchdb",
    "postgresql://u:s3cret%50W@127.0.0.1:notaport/db",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_09_a_password_in_a_url_is_never_shown(membership, handle, base, url):
    assert handle("member-join", NODE1).returncode == 0
    commands = [["state", "--db", url], ["db", "upgrade", "--db", url], ["init", "--db", url],
                ["ship", "--base-dir", base, "--to", url],
                ["compact", "--base-dir", base, "--before", "now", "--require-shipped", url]]
    if "notaport" in url or url.startswith(("foo:", "mysql:")):
        # A URL that can never work is refused at once, not retried as an outage forever.
        commands.append(["ship", "--base-dir", base, "--follow", "--to", url])
    # A URL that can never work (malformed, an unknown kind) is a usage error: exit 2.
    code = 2 if "notaport" in url or url.startswith("foo:") else 1
    for command in commands:
        r = cli(membership, *command, timeout=30)
        one_line(r, code)
        assert SECRET not in r.stdout + r.stderr, (command, r.stderr)
    r = subprocess.run([membership, "handle", "--base-dir", str(base), "--db", url], input=NODE1,
                       env=serf_env(SERF_EVENT="member-join"), capture_output=True, timeout=60)
    assert SECRET not in r.stdout + r.stderr and r.stderr.count(b"\n") == 1, r.stderr
    for path in base.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_bytes(), path


# == 10. Nothing secret is stored, and every store is 0600 =====================================
# Before: SERF_RPC_AUTH (the serf CLI's RPC token) was recorded, exported and shipped; a store
# made by `db upgrade --db NEWPATH` was 0644.

def test_10_serf_rpc_auth_is_never_stored_exported_or_spooled(membership, base, tmp_path):
    secret = {"SERF_RPC_AUTH": "topsecret", "SERF_RPC_ADDR": "127.0.0.1:7373"}
    assert serf(membership, base, "member-join", NODE1, **secret).returncode == 0
    r = serf(membership, base, "query", b"", SERF_QUERY_NAME="membership-live",
             SERF_QUERY_LTIME="1", **secret)
    assert r.returncode == 0 and b"topsecret" not in r.stdout
    with ReadOnly(base / "membership.db"):  # spooled, then taken in
        r = serf(membership, base, "member-failed", NODE1, **secret)
        assert b"spooled" in r.stderr
        for f in (base / "spool").glob("*.event"):
            assert b"topsecret" not in f.read_bytes() and b"SERF_RPC" not in f.read_bytes()
    assert serf(membership, base, "member-update", NODE1, **secret).returncode == 0
    for f in base.glob("membership.db*"):
        assert b"topsecret" not in f.read_bytes() and b"SERF_RPC_" not in f.read_bytes(), f
    export = cli(membership, "export", "--base-dir", base)
    assert export.returncode == 0 and len(export.stdout.splitlines()) == 5
    assert b"topsecret" not in export.stdout and b"SERF_RPC" not in export.stdout


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()
            if p.name.startswith(("membership.db", "central.db", "node.db"))}


def test_10_every_store_and_lock_file_is_0600_whatever_the_umask(membership, tmp_path):
    made = {}
    # By the handler, on the spot.
    h = tmp_path / "handler"
    r = serf(membership, h, "member-join", NODE1, preexec_fn=with_umask_0)
    assert r.returncode == 0, r.stderr
    made["handler"] = _modes(h)
    # By init, import, db upgrade (node and central).
    i = tmp_path / "init"
    assert cli(membership, "init", "--base-dir", i, preexec_fn=with_umask_0).returncode == 0
    made["init"] = _modes(i)
    exported = cli(membership, "export", "--base-dir", h).stdout
    m = tmp_path / "import"
    r = cli(membership, "import", "--base-dir", m, input=exported, preexec_fn=with_umask_0)
    assert r.returncode == 0, r.stderr
    made["import"] = _modes(m)
    u = tmp_path / "upgrade"
    u.mkdir()
    r = cli(membership, "db", "upgrade", "--db", u / "node.db", preexec_fn=with_umask_0)
    assert r.returncode == 0, r.stderr
    r = cli(membership, "db", "upgrade", "--role", "central", "--db",
            f"sqlite:///{u / 'central.db'}", preexec_fn=with_umask_0)
    assert r.returncode == 0, r.stderr
    made["db upgrade"] = _modes(u)
    # A central SQLite store after a ship has written it.
    r = cli(membership, "ship", "--base-dir", h, "--to", f"sqlite:///{u / 'central.db'}",
            preexec_fn=with_umask_0)
    assert r.returncode == 0, r.stderr
    made["central after ship"] = _modes(u)
    for how, modes in made.items():
        assert modes and all(mode == 0o600 for mode in modes.values()), (how, modes)
    assert "membership.db.lock" in made["handler"]
    assert (h / "live-nodes.json").stat().st_mode & 0o777 == 0o644
    for d in (h, i, m):  # a base dir made on the spot is not open to every local user
        assert d.stat().st_mode & 0o777 == 0o755, d


# == 11. Terminal and table spoofing ============================================================
# Before: a member named with ESC and CR (as a real Serf node can be) forged a row in
# `state`, `replay` and `audit`; an ESC in a name made the SVG timeline invalid XML, and a
# lone surrogate in a catalog id crashed `timeline`, leaving an empty file.

EVIL = b"evil\x1b[2K\r127.0.0.201:10031/droonga  live  alive"
EVIL2 = b"evil2\\n127.0.0.202:10031/droonga  live  alive"  # Serf escapes a newline as \n


def test_11_a_member_name_cannot_forge_a_table_row(membership, base):
    (base / "catalog.json").unlink()  # members are the nodes
    joined = EVIL + b"\t127.0.0.9\t\t\n" + EVIL2 + b"\t127.0.0.10\t\t\nok\t127.0.0.11\t\t\n"
    assert serf(membership, base, "member-join", joined).returncode == 0
    assert serf(membership, base, "member-failed", EVIL + b"\t127.0.0.9\t\t\n" + EVIL2
                + b"\t127.0.0.10\t\t\n").returncode == 0
    assert serf(membership, base, "member-update", b"ok\t127.0.0.11\t\tnote=" + EVIL[4:]
                + b"\n").returncode == 0
    nodes = json.loads(cli(membership, "state", "--base-dir", base, "--json").stdout)["nodes"]
    assert len(nodes) == 3
    events = len(replay_json(membership, base))
    doc = json.loads(cli(membership, "audit", "--base-dir", base, "--json").stdout)
    incidents = sum(len(n["incidents"]) for n in doc["nodes"].values())
    expected_lines = {"state": 2 + len(nodes), "replay": 1 + events,
                      "audit": 2 + len(doc["nodes"]) + 2 + incidents + 2}
    for command, lines in expected_lines.items():
        r = cli(membership, command, "--base-dir", base)
        assert r.returncode == 0 and r.stderr == b""
        assert b"\x1b" not in r.stdout and b"\r" not in r.stdout, (command, r.stdout)
        text = r.stdout.decode()
        assert text.count("\n") == lines, (command, text)
        for line in text.splitlines():
            assert not line.startswith(("127.0.0.20", "evil2\n")), (command, line)
        assert "evil\\x1b[2K\\r127.0.0.201" in text and "evil2\\n127.0.0.202" in text


def test_11_the_timeline_is_well_formed_xml_and_never_an_empty_file(membership, base, tmp_path):
    cat = json.loads(json.dumps(CATALOG_V2))
    cat["datasets"]["Default"]["replicas"].append({"slices": [{"volume": {
        "address": "192.168.100.53\ud800:10031/droonga.000"}}]})  # a lone surrogate
    (base / "catalog.json").write_text(json.dumps(cat))  # ASCII: "\ud800" as a JSON escape
    assert serf(membership, base, "member-join", EVIL + b"\t127.0.0.9\t\t\n").returncode == 0
    assert serf(membership, base, "member-failed", EVIL + b"\t127.0.0.9\t\t\n").returncode == 0
    assert serf(membership, base, "member-failed", NODE1).returncode == 0
    # Invalid UTF-8 in an address: recorded, reported, the last good catalog kept.
    raw_cat = json.dumps(cat).encode().replace(b"192.168.100.50", b"192.168.100.50\xff")
    (base / "catalog.json").write_bytes(raw_cat)
    r = serf(membership, base, "member-join", NODE1)
    assert r.returncode == 0 and b"not valid JSON" in r.stderr
    for suffix in ("svg", "html"):
        out = tmp_path / f"t.{suffix}"
        r = cli(membership, "timeline", "--base-dir", base, "-o", out)
        assert r.returncode == 0 and r.stderr == b"", r.stderr
        data = out.read_bytes()
        data.decode("utf-8")
        assert b"\x1b" not in data
        if suffix == "svg":
            root = ET.fromstring(data)
            text = "".join(root.itertext())
            assert "evil\\x1b[2K\\r127.0.0.201" in text and "\\ud800" in text
    # A failure never leaves an empty (or half) file, nor clobbers an old one.
    out = tmp_path / "t.svg"
    before = out.read_bytes()
    bad = tmp_path / "garbage"
    bad.mkdir()
    (bad / "membership.db").write_bytes(os.urandom(4096))
    one_line(cli(membership, "timeline", "--base-dir", bad, "-o", out))
    assert out.read_bytes() == before
    fresh = tmp_path / "none.svg"
    one_line(cli(membership, "timeline", "--base-dir", bad, "-o", fresh))
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name]


# == 12. Lock files =============================================================================
# Before: membership.db.lock was 0644 (any local user could flock it and stall every handler
# run), and lock files were opened through planted symlinks: root created files wherever
# they pointed.

def test_12_lock_files_are_0600(membership, base):
    os.unlink(base / "catalog.json")
    assert serf(membership, base, "member-join", NODE1, preexec_fn=with_umask_0).returncode == 0
    with ReadOnly(base / "membership.db"):
        assert b"spooled" in serf(membership, base, "member-failed", NODE1).stderr
    r = serf(membership, base, "member-join", NODE1, preexec_fn=with_umask_0)
    assert r.returncode == 0 and r.stderr == b""
    assert (base / "membership.db.lock").stat().st_mode & 0o777 == 0o600
    assert (base / "spool" / ".lock").stat().st_mode & 0o777 == 0o600
    assert (base / "spool").stat().st_mode & 0o777 == 0o700
    assert len(rows(base)) == 3


@pytest.mark.parametrize("where", ["membership.db.lock", "spool/.lock"])
def test_12_a_symlink_planted_at_a_lock_file_is_refused(membership, base, tmp_path, where):
    if where == "spool/.lock":
        assert serf(membership, base, "member-join", NODE1).returncode == 0
        (base / "spool").mkdir(mode=0o700)
    target = tmp_path / "victim"
    (base / where).symlink_to(target)
    r = serf(membership, base, "member-failed", NODE1)
    assert r.returncode == 0 and r.stderr.count(b"\n") == 1, r.stderr
    assert b"symbolic link" in r.stderr and b"spooled" in r.stderr
    assert not target.exists() and not os.path.lexists(target), "nothing created through it"
    assert (base / where).is_symlink()
    if where == "membership.db.lock":
        r = cli(membership, "init", "--base-dir", base)
        one_line(r)
        assert b"symbolic link" in r.stderr and not os.path.lexists(target)
        r = cli(membership, "db", "upgrade", "--base-dir", base)
        one_line(r)
        assert not os.path.lexists(target)
    (base / where).unlink()
    r = serf(membership, base, "member-update", NODE1)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    kinds = [json.loads(x)["event"] for x in cli(membership, "replay", "--base-dir", base,
                                                 "--json").stdout.splitlines()]
    assert kinds[-2:] == ["member-failed", "member-update"], "nothing lost"
    assert list(live(base)) == [N0, N2]
    verify_ok(membership, base)


# == 13. The catalog read cannot hang or bloat recording ========================================
# Before: a FIFO at catalog.json blocked the handler forever inside BEGIN IMMEDIATE (holding
# the store's write lock); a symlink to /dev/zero grew its memory without bound.

def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("store", ["fresh base dir", "existing store"])
def test_13_a_fifo_or_dev_zero_at_the_catalog_cannot_hang_or_bloat_the_handler(
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


def test_13_the_catalog_is_never_read_while_the_store_is_write_locked(base, monkeypatch):
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


def test_14_garbage_is_recorded_raw_and_folded_as_nothing(membership, base):
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


# == 15. One line, never a traceback; ship --follow rides out an outage ========================
# Before: two ships at once died of an unwrapped UniqueViolation; `rebuild` on a read-only
# store, `audit --since @99999999999999999999999` and `route` on the catalogs of item 2
# crashed; a newer store said "run: membership db upgrade" (which then refused); ship
# --follow exited on a 2 s outage.

def _central_seqs(url: str, origin: str) -> list[int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as c:
            return [r[0] for r in c.execute(text(
                "SELECT seq FROM cluster_event WHERE origin = :o ORDER BY seq"), {"o": origin})]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_15_two_ships_at_once_both_succeed_and_copy_nothing_twice(membership, tmp_path, pg_url):
    from membership_log.demo.synthetic import make_store

    assert cli(membership, "db", "upgrade", "--db", pg_url).returncode == 0
    s = make_store(str(tmp_path / "n"), "node0", 20_000)
    failures = []

    def handler_runs(stop: threading.Event) -> None:
        while not stop.is_set():
            r = serf(membership, s.base_dir, "member-update", b"node1\t192.168.0.2\t\t\n")
            if r.returncode != 0:
                failures.append(r.stderr)

    for _ in range(3):
        # The node's handler keeps recording while both ships run.
        stop = threading.Event()
        t = threading.Thread(target=handler_runs, args=(stop,))
        t.start()
        try:
            ships = [subprocess.Popen([membership, "ship", "--base-dir", s.base_dir, "--to",
                                       pg_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for _ in range(2)]
            results = [(p.wait(timeout=120), *p.communicate()) for p in ships]
        finally:
            stop.set()
            t.join()
        for code, out, err in results:
            assert code == 0 and err == b"" and out.startswith(b"shipped "), (out, err)
        shipped = _central_seqs(pg_url, "node0")
        assert shipped == list(range(1, len(shipped) + 1)), "no gap, nothing twice"
    assert failures == []
    assert cli(membership, "ship", "--base-dir", s.base_dir, "--to", pg_url).returncode == 0
    assert _central_seqs(pg_url, "node0") == list(range(1, rows(s.base_dir)[-1][0] + 1))
    r = cli(membership, "verify", "--db", pg_url)
    assert r.returncode == 0 and b"FAILED" not in r.stdout, r.stdout


@pytest.mark.postgres
def test_15_ship_does_not_mistake_events_recorded_meanwhile_for_another_log(membership, base,
                                                                           pg_url, monkeypatch):
    """Deterministic: the node's handler records an event between ship's look at the local
    head and its reading of a batch. Before, the batch took the new event along, and the next
    look saw a central copy longer than the (stale) local head: "not the same log", exit 1
    (and ship --follow exited for good)."""
    from membership_log.history import transfer

    assert cli(membership, "db", "upgrade", "--db", pg_url).returncode == 0
    assert serf(membership, base, "member-join", NODE1).returncode == 0
    real = NodeStore.stored_rows
    meanwhile = []

    def stored_rows(self, after, limit):
        if not meanwhile:
            meanwhile.append(serf(membership, base, "member-failed", NODE1).returncode)
        return real(self, after, limit)

    monkeypatch.setattr(NodeStore, "stored_rows", stored_rows)
    s = settings.resolve(str(base))
    first = transfer.ship(s, pg_url)
    assert meanwhile == [0]
    second = transfer.ship(s, pg_url)
    assert first.copied + second.copied == 3 and second.central_head == 3
    assert _central_seqs(pg_url, "node0") == [1, 2, 3]


def test_15_rebuild_on_a_read_only_store_is_one_line(membership, handle, base):
    assert handle("member-join", NODE1).returncode == 0
    with ReadOnly(base / "membership.db"):
        err = one_line(cli(membership, "rebuild", "--base-dir", base))
    assert "read-only" in err
    verify_ok(membership, base)


@pytest.mark.parametrize("value", ["@99999999999999999999999", "999999999999999999999 w ago",
                                   "99999-01-01", "-1 d ago", "@" + "9" * 5000])
def test_15_an_absurd_time_is_a_usage_error_not_a_traceback(membership, handle, base, value):
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


@pytest.mark.parametrize("case", sorted(BAD_CATALOGS))
def test_15_route_on_a_hostile_catalog_is_one_line_or_an_answer(membership, handle, base, case):
    assert handle("member-join", NODE1).returncode == 0
    (base / "catalog.json").write_bytes(BAD_CATALOGS[case]())
    for extra in ([], ["--json"], ["--dataset", "Default"]):
        r = cli(membership, "route", "--base-dir", base, *extra)
        if r.returncode == 0:
            assert r.stderr == b"" and b"Default" in r.stdout
        else:
            err = one_line(r)
            assert "catalog" in err or "dataset" in err


def test_15_a_store_of_a_newer_release_says_to_upgrade_membership_log(membership, handle, base,
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


class Forwarder:
    """A TCP forwarder 127.0.0.1:<port> -> PostgreSQL, in threads, that can be cut (every
    connection reset, new ones refused) and restored on the same port: an outage of the
    central database as the shipper sees it."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.listener = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        self._spawn(self._accept, listener)

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            self._spawn(self._pipe, client, server)

    def _pipe(self, a, b) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def cut(self) -> None:
        self.listener.close()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:  # reset, as a dead network or a crashed server looks
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                s.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.cut()
        for t in self.threads:
            t.join(2)


@pytest.mark.postgres
def test_15_ship_follow_rides_out_a_2_s_outage_of_the_central_store(membership, handle, base,
                                                                    pg_url):
    fwd = Forwarder()
    fwd.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{fwd.port}")
    assert url != pg_url
    p = None
    try:
        assert cli(membership, "db", "upgrade", "--db", url).returncode == 0
        assert handle("member-join", NODE1).returncode == 0
        p = subprocess.Popen([membership, "ship", "--base-dir", str(base), "--to", url,
                              "--follow", "--interval", "0.2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def shipped(n: int, timeout: float = 30) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if len(_central_seqs(pg_url, "node0")) >= n:
                    return True
                time.sleep(0.1)
            return False

        assert shipped(2)
        fwd.cut()
        cut_at = time.monotonic()
        for kind in ["member-failed", "member-join", "member-leave", "member-join"]:
            assert handle(kind, NODE1).returncode == 0  # recorded meanwhile
        time.sleep(max(0.0, 2.0 - (time.monotonic() - cut_at)))
        if p.poll() is not None:
            out, err = p.communicate()
            pytest.fail(f"ship --follow exited {p.returncode} during the outage: {out!r} {err!r}")
        fwd.start()
        restored_at = time.monotonic()
        assert shipped(6), "shipping resumed"
        resumed_in = time.monotonic() - restored_at
        assert handle("member-update", NODE1).returncode == 0
        assert shipped(7)
        time.sleep(0.5)
    finally:
        if p is not None:
            p.terminate()
            out, err = p.communicate(timeout=15)
        fwd.stop()
    assert p.returncode == 0, err
    text = out.decode()
    assert _central_seqs(pg_url, "node0") == list(range(1, 8)), "nothing lost or duplicated"
    assert text.count("retrying with backoff") == 1, text
    assert text.count("reachable again") == 1, text
    assert "s3cret" not in text and "Traceback" not in err.decode()
    print(f"\nship --follow: a 2 s outage, reported once; shipping resumed {resumed_in:.1f} s "
          f"after the database came back; 7 of 7 events shipped, none twice")
    r = cli(membership, "verify", "--db", pg_url)
    assert r.returncode == 0 and b"ok: node0: 7 events" in r.stdout, r.stdout
