"""The spool: intake under kill -9 takes nothing in twice, verify counts what it
should, and a spool file that cannot be decoded or moved aside.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli
from hardeninghelpers import (
    NODE1,
    serf,
    serf_env,
    verify_ok,
)
from samples import NODES
from test_reliability import ReadOnly
from typer.testing import CliRunner

from membership_log.cli import app
from membership_log.core.raw import encode_env
from membership_log.stores import spool

pytestmark = pytest.mark.e2e

runner = CliRunner()
N0, N1, N2 = NODES


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


def test_spool_intake_killed_at_random_moments_takes_nothing_in_twice(membership, tmp_path):
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


def test_verify_does_not_count_spool_files_already_taken_in(membership, handle, base):
    assert handle("member-join", NODE1).returncode == 0
    with ReadOnly(base / "membership.db"):
        assert b"spooled" in handle("member-failed", NODE1).stderr
    (spooled,) = (base / "spool").glob("*.event")
    data = spooled.read_bytes()
    assert handle("member-update", NODE1).returncode == 0  # takes it in, deletes the file
    spooled.write_bytes(data)  # as if killed between the commit and the unlink
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 0 and b"wait in the spool" not in r.stdout, r.stdout


# == 8. The clock steps back; a window backwards; a spool file nobody can read ===================
# Before: negative availability and durations; --since after --until accepted; an
# undecodable spool file was skipped by every run while verify said "spool empty".

def test_an_undecodable_spool_file_fails_verify_and_is_moved_aside(membership, handle, base):
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


def test_verify_names_the_unreadable_spool_file(membership, handle, base):
    assert handle("member-join", NODE1).returncode == 0
    (base / "spool").mkdir(mode=0o700)
    bad = base / "spool" / f"{1:020d}-1-deadbeef{spool.SUFFIX}"
    bad.write_bytes(b"not a spool file")
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 1 and bad.name.encode() in r.stdout, r.stdout


def test_a_spool_file_that_cannot_be_moved_aside_is_never_taken_in_twice(membership, handle,
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
