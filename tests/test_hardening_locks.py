"""Store and lock files: 0600 whatever the umask, and a symlink planted at a lock
file is refused.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import cli, live, rows
from hardeninghelpers import (
    NODE1,
    one_line,
    serf,
    verify_ok,
    with_umask_0,
)
from samples import NODES
from test_reliability import ReadOnly

pytestmark = pytest.mark.e2e

N0, N1, N2 = NODES


# == 10. Nothing secret is stored, and every store is 0600 =====================================
# Before: SERF_RPC_AUTH (the serf CLI's RPC token) was recorded, exported and shipped; a store
# made by `db upgrade --db NEWPATH` was 0644.

def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()
            if p.name.startswith(("membership.db", "central.db", "node.db"))}


def test_every_store_and_lock_file_is_0600_whatever_the_umask(membership, tmp_path):
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


# == 12. Lock files =============================================================================
# Before: membership.db.lock was 0644 (any local user could flock it and stall every handler
# run), and lock files were opened through planted symlinks: root created files wherever
# they pointed.

def test_lock_files_are_0600(membership, base):
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
def test_a_symlink_planted_at_a_lock_file_is_refused(membership, base, tmp_path, where):
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
