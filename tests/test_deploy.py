"""A deployment that works as written (issue 18, SPEC "Deployment"): the store group, the
refusals that say what to change, ``membership doctor``, ``membership heartbeat`` and its
metric, and every unit of examples/systemd/ run as its own user against a store the handler
wrote as root.

Other users need a ``membership`` they can run: the test's own may live where only root can
reach (a pyenv under /root), so the tests that switch users install this checkout in a venv,
as README installs it, with a Python every user can run. They run as root (they create the
units' user and group with groupadd/useradd when missing, and switch to them with runuser and
setpriv).
Every process started here is stopped by pid.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import missing
from opshelpers import get, wait_for
from realservers import free_port

from membership_log.core import events as ev
from membership_log.core import fold
from membership_log.demo.localcluster import Agent, Cluster, catalog_for, wait_until
from membership_log.version import __version__

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "examples" / "systemd"
GROUP = "membership"  # the units' Group= and the readers' User=
HEARTBEAT = fold.HEARTBEAT
#: Loopback addresses of this file's Serf agents (no other test file uses them).
IPS = [f"127.0.0.{231 + i}" for i in range(6)]


# -- the pure part: the fold's heartbeats ------------------------------------------------------


def _event(seq: int, at: int, kind: str, name=None, payload=None, observer="node0"):
    return ev.Event(seq, at, observer, kind, name, None, (), payload, None, ())


def test_the_fold_keeps_the_last_heartbeat_per_sender():
    events = [
        _event(1, 10, ev.USER, HEARTBEAT, "node1\n"),
        _event(2, 20, ev.USER, HEARTBEAT, "node2\n"),
        _event(3, 30, ev.USER, HEARTBEAT, "node1\n", observer="node2"),
        _event(4, 40, ev.USER, "deploy", "node2\n"),          # another user event
        _event(5, 50, ev.QUERY, HEARTBEAT, "node2\n"),         # a query is not a heartbeat
        _event(6, 60, ev.USER, HEARTBEAT, "two words\n"),      # no single sender
        _event(7, 70, ev.USER, HEARTBEAT, ""),
    ]
    state = fold.State()
    effects = [state.apply(e) for e in events]
    assert state.heartbeats == {"node1": 30, "node2": 20}
    assert all(not e.changes for e in effects), "a heartbeat changes no node's liveness"
    assert effects[5].warnings and effects[6].warnings and not effects[0].warnings
    again = fold.from_plain(fold.to_plain(state))
    assert again.heartbeats == state.heartbeats and again == state


def test_older_states_still_load_without_heartbeats():
    """A retention anchor's state cannot be refolded: one of the release before heartbeats
    must still load (codec.decode_anchor_state goes through from_plain)."""
    state = fold.State()
    state.apply(_event(1, 10, ev.USER, HEARTBEAT, "node1"))
    plain = fold.to_plain(state)
    assert plain[0] == fold.PLAIN_VERSION == 8
    older = (6, *plain[1:12])  # version 6 had neither the heartbeats nor the heads
    loaded = fold.from_plain(older)
    assert loaded.heartbeats == {} and loaded.counts == state.counts
    assert loaded.seq == 1 and loaded.role_epoch == state.role_epoch
    oldest = (5, *plain[1:11])  # nor a role epoch (nor a catalog here)
    assert fold.from_plain(oldest).heartbeats == {} and fold.from_plain(oldest).seq == 1
    assert fold.from_plain((7, *plain[1:13])).heartbeats == state.heartbeats
    with pytest.raises(ValueError):
        fold.from_plain((4, *plain[1:12]))
    with pytest.raises(ValueError):
        fold.from_plain((6, *plain[1:13]))  # a version-6 state has 12 fields, not 13


def test_serf_handler_lines_are_split_as_serf_splits_them():
    from membership_log.ops import doctor

    assert doctor._handler_of("membership handle --base-dir /x") == ["--base-dir", "/x"]
    assert doctor._handler_of("/opt/m/bin/membership handle") == []
    assert doctor._handler_of("python3 -m membership_log handle --db a.db") == ["--db", "a.db"]
    assert doctor._handler_of("echo membership handle") == []  # still a membership handle
    assert doctor._handler_of("/usr/bin/other handle") is None
    assert doctor._filter_problem("*") is None
    assert doctor._filter_problem("member-join,user:deploy,query") is None
    assert "'MEMBERSHIP_BASE_DIR' is not a Serf event" in doctor._filter_problem(
        "MEMBERSHIP_BASE_DIR")
    assert doctor._filter_problem("member-join:x") is not None


# -- users, a shared directory, a membership every user can run --------------------------------


def _need_root() -> None:
    if os.geteuid() != 0:
        missing("the deployment tests switch users: they must run as root")


def _ensure_account(user: str, group: str) -> None:
    """The units' user and group, as README's Deployment section makes them."""
    try:
        grp.getgrnam(group)
    except KeyError:
        subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--gid", group, "--no-create-home", "--shell",
                        "/usr/sbin/nologin", user], check=True, capture_output=True)


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} (util-linux) is needed to run commands as other users")
    return found


def as_user(user: str, group: str | None = None, drop_caps: bool = False) -> list[str]:
    """The prefix that runs a command as ``user`` (and ``group``) the way systemd's User=,
    Group=, NoNewPrivileges=yes and, with ``drop_caps``, CapabilityBoundingSet= (empty) do:
    runuser switches user and groups (setpriv alone let this sandbox run programs the user
    may not reach), then setpriv drops what is left."""
    group = group or grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    return [_tool("runuser"), "-u", user, "-g", group, "--", _tool("setpriv"), "--no-new-privs",
            *(["--bounding-set", "-all", "--inh-caps", "-all"] if drop_caps else []), "--"]


#: The environment a systemd service gets (plus what a test adds).
SERVICE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/"}


def run_as(user: str, argv: list[str], group: str | None = None, env: dict | None = None,
           **kw) -> subprocess.CompletedProcess:
    return subprocess.run(as_user(user, group) + argv, capture_output=True, text=True,
                          timeout=120, env={**SERVICE_ENV, **(env or {})},
                          preexec_fn=lambda: os.umask(0o027), **kw)


@pytest.fixture(scope="module")
def accounts() -> str:
    _need_root()
    _ensure_account(GROUP, GROUP)
    pwd.getpwnam("nobody")  # a user in no store group
    return GROUP


@pytest.fixture
def shared(tmp_path_factory) -> Path:
    """A directory every user can pass through (pytest's own tmp dirs are root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="membership-deploy-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _runnable_by(user: str, python: str) -> bool:
    r = subprocess.run(as_user(user) + [python, "-c", "pass"], capture_output=True,
                       timeout=60)
    return r.returncode == 0


@pytest.fixture(scope="module")
def installed(accounts, membership) -> str:
    """A ``membership`` every user can run: the test's own if they can, else this checkout
    installed (pip install, as README says) in a venv of a Python they can run."""
    if _runnable_by(GROUP, str(Path(membership).with_name("python"))):
        yield membership
        return
    candidates = [getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3"]
    python = next((p for p in candidates if p and _runnable_by(GROUP, p)), None)
    if python is None:
        pytest.fail("no Python that the membership user can run (tried "
                    f"{', '.join(candidates)})")
    d = Path(tempfile.mkdtemp(prefix="membership-venv-"))
    d.chmod(0o755)
    try:
        venv = d / "opt" / "membership-log"
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True,
                       timeout=300)
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)],
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        yield str(venv / "bin" / "membership")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _handle(membership: str, base: Path, event: str, stdin: bytes = b"",
            observer: str = "node0", args: tuple = (), env: dict | None = None):
    """``membership handle`` as Serf runs it, as root."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SERF_", "MEMBERSHIP_"))}
    full.update({"SERF_EVENT": event, "SERF_SELF_NAME": observer, **(env or {})})
    return subprocess.run([membership, "handle", "--base-dir", str(base), *args],
                          input=stdin, env=full, capture_output=True, timeout=60)


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _group(p: Path) -> str:
    return grp.getgrgid(os.stat(p).st_gid).gr_name


def _catalog(base: Path, ips: list[str]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    (base / "catalog.json").write_bytes(catalog_for(ips))


def _query(db: Path, sql: str):
    """One value from the store, read as its readers read it (a read-only connection: a
    read-write one closed last would take -wal and -shm away from them)."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute(sql).fetchone()[0]
    finally:
        c.close()


def _break_revision(db: Path, revision: str) -> str:
    """Set the store's schema revision (the handler then spools); returns the old one."""
    with sqlite3.connect(db) as c:
        old = c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        c.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    return old


JOIN = b"node0\t127.0.0.231\t\t\nnode1\t127.0.0.232\t\t\n"
FAIL = b"node1\t127.0.0.232\t\t\n"


# -- the permission model ----------------------------------------------------------------------


def test_without_a_store_group_the_store_and_spool_stay_the_owners(membership, shared):
    base = shared / "node"
    _catalog(base, IPS[:2])
    assert _handle(membership, base, "member-join", JOIN).returncode == 0
    db = base / "membership.db"
    assert _mode(db) == 0o600
    for side in ("-wal", "-shm"):  # SQLite's own: gone after the close, or the db's mode
        p = Path(str(db) + side)
        assert not p.exists() or _mode(p) == 0o600
    old = _break_revision(db, "0099")
    r = _handle(membership, base, "member-failed", FAIL)
    assert r.returncode == 0 and b"event spooled to" in r.stderr, r.stderr
    spool = base / "spool"
    (event,) = spool.glob("*.event")
    assert _mode(spool) == 0o700 and _mode(event) == 0o600
    _break_revision(db, old)
    assert _handle(membership, base, "member-join", FAIL).returncode == 0
    assert not list(spool.glob("*.event")), "taken in by the next run"


def test_the_store_group_on_handle_init_and_db_upgrade(membership, accounts, shared):
    # The handler's first run in a new base dir makes the store group-readable.
    base = shared / "handled"
    _catalog(base, IPS[:2])
    r = _handle(membership, base, "member-join", JOIN, args=("--store-group", GROUP))
    assert r.returncode == 0, r.stderr
    db = base / "membership.db"
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert (_mode(p), _group(p)) == (0o640, GROUP), p
    # ... and keeps -wal and -shm there after every run (SQLite deletes them on close).
    for _ in range(3):
        assert _handle(membership, base, "member-failed", FAIL,
                       args=("--store-group", GROUP)).returncode == 0
        assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
    # Spooled events with a group: the spool 0750, its files 0640, the group's.
    old = _break_revision(db, "0099")
    assert _handle(membership, base, "member-join", FAIL,
                   args=("--store-group", GROUP)).returncode == 0
    spool = base / "spool"
    (event,) = spool.glob("*.event")
    assert (_mode(spool), _group(spool)) == (0o750, GROUP)
    assert (_mode(event), _group(event)) == (0o640, GROUP)
    # The metric counts it while it waits.
    _break_revision(db, old)
    metrics = subprocess.run([membership, "metrics", "--base-dir", str(base)],
                             capture_output=True, text=True, check=True).stdout
    assert "membership_spool_files 1.0" in metrics

    # init: a store made without a group gets one, spool included.
    plain = shared / "plain"
    _catalog(plain, IPS[:2])
    assert subprocess.run([membership, "init", "--base-dir", str(plain)],
                          capture_output=True).returncode == 0
    assert _mode(plain / "membership.db") == 0o600
    _break_revision(plain / "membership.db", "0099")
    _handle(membership, plain, "member-join", JOIN)
    _break_revision(plain / "membership.db", old)
    assert _mode(plain / "spool") == 0o700
    r = subprocess.run([membership, "init", "--base-dir", str(plain), "--store-group", GROUP],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (_mode(plain / "membership.db"), _group(plain / "membership.db")) == (0o640, GROUP)
    assert (_mode(plain / "spool"), _group(plain / "spool")) == (0o750, GROUP)
    assert all(_mode(p) == 0o640 for p in (plain / "spool").glob("*.event"))
    # Run again without it: nothing is revoked behind the operator's back.
    subprocess.run([membership, "init", "--base-dir", str(plain)], check=True,
                   capture_output=True)
    assert _mode(plain / "membership.db") == 0o640

    # db upgrade, the group from the environment.
    upgraded = shared / "upgraded"
    _catalog(upgraded, IPS[:2])
    subprocess.run([membership, "init", "--base-dir", str(upgraded)], check=True,
                   capture_output=True)
    r = subprocess.run([membership, "db", "upgrade", "--base-dir", str(upgraded)],
                       capture_output=True, text=True,
                       env={**os.environ, "MEMBERSHIP_STORE_GROUP": GROUP})
    assert r.returncode == 0, r.stderr
    assert _group(upgraded / "membership.db") == GROUP
    assert Path(f"{upgraded / 'membership.db'}-shm").exists()

    # A group that does not exist: one line, exit 1, nothing changed.
    r = subprocess.run([membership, "init", "--base-dir", str(upgraded), "--store-group",
                        "no-such-group-x"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "no-such-group-x" in r.stderr and "groupadd" in r.stderr


def test_a_group_member_reads_what_root_records_meanwhile(membership, installed, shared):
    """The readers' whole need: read access to the store and its -wal and -shm, which the
    writers keep there. A member of the group reads while root's handler records, and
    nothing it runs fails."""
    base = shared / "busy"
    _catalog(base, IPS[:2])
    assert _handle(membership, base, "member-join", JOIN,
                   args=("--store-group", GROUP)).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERF_", "MEMBERSHIP_"))}
    writer = subprocess.Popen(
        ["sh", "-c", f"for i in $(seq 1 80); do printf 'node1\\t127.0.0.232\\t\\t\\n' | "
                     f"SERF_EVENT=member-$([ $((i % 2)) = 0 ] && echo join || echo failed) "
                     f"SERF_SELF_NAME=node0 {shlex.quote(membership)} handle --base-dir "
                     f"{shlex.quote(str(base))} --store-group {GROUP} || exit 1; done"],
        env=env, stderr=subprocess.PIPE)
    try:
        reads = 0
        while writer.poll() is None:
            r = run_as(GROUP, [installed, "state", "--base-dir", str(base), "--json"])
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["seq"] >= 1
            reads += 1
        assert writer.wait() == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert reads >= 2, "the reader ran while the handler recorded"
    for args in (["verify"], ["replay", "--json"], ["metrics"], ["audit", "--json"]):
        r = run_as(GROUP, [installed, *args, "--base-dir", str(base)])
        assert r.returncode == 0, (args, r.stderr)
    replayed = run_as(GROUP, [installed, "replay", "--json", "--base-dir", str(base)]).stdout
    assert len(replayed.splitlines()) == 1 + 1 + 80  # catalog, join, the writer's


def test_a_refusal_says_which_file_which_user_and_what_to_change(membership, installed,
                                                                 shared):
    base = shared / "refused"
    _catalog(base, IPS[:2])
    assert _handle(membership, base, "member-join", JOIN,
                   args=("--store-group", GROUP)).returncode == 0
    db = base / "membership.db"
    nobody = pwd.getpwnam("nobody")

    def refused(user: str, *args: str) -> str:
        r = run_as(user, [installed, *(args or ("state",)), "--base-dir", str(base)])
        assert r.returncode == 1, r.stdout
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("membership: "), r.stderr
        assert "Traceback" not in r.stderr
        return r.stderr

    # Not in the group.
    line = refused("nobody")
    assert f"cannot read store {db} as user nobody (uid {nobody.pw_uid})" in line
    assert f"{db} (owner root, group {GROUP}, mode 0640)" in line
    assert f"usermod -aG {GROUP} nobody" in line
    # In the group, but the store is the owner's alone.
    db.chmod(0o600)
    line = refused(GROUP)
    assert f"as user {GROUP} (uid {pwd.getpwnam(GROUP).pw_uid})" in line
    assert "mode 0600" in line and f"--store-group {GROUP}" in line and "chmod g+r" in line
    db.chmod(0o640)
    # The -wal and -shm files gone (a store made before there was a group).
    for side in ("-wal", "-shm"):
        os.unlink(f"{db}{side}")
    line = refused(GROUP)
    assert f"{db}-wal and {db}-shm are missing" in line and "init --store-group" in line
    subprocess.run([membership, "db", "upgrade", "--base-dir", str(base), "--store-group",
                    GROUP], check=True, capture_output=True)
    assert run_as(GROUP, [installed, "state", "--base-dir", str(base)]).returncode == 0
    # A directory on the way that the user may not pass.
    base.chmod(0o700)
    try:
        line = refused(GROUP)
        assert f"no search permission on the directory {base}" in line
        assert f"chmod o+x {base}" in line
    finally:
        base.chmod(0o755)
    # A writer's command run as a reader: only the owner writes (the store's translation of
    # SQLite's refusal, and set-up's of the lock file's).
    for command in ("rebuild", "init", "db upgrade"):
        line = refused(GROUP, *command.split())
        assert f"cannot write store {db} as user {GROUP}" in line, command
        assert "only its owner root writes it: run this as root" in line, command


# -- membership doctor ---------------------------------------------------------------------


def _doctor(membership, *args, user: str | None = None, env: dict | None = None):
    argv = [membership, "doctor", *args]
    if user is not None:
        return run_as(user, argv, env=env)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SERF_", "MEMBERSHIP_"))}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**full, **(env or {})})


def _lines(r) -> dict[str, list[str]]:
    """Doctor's output: point name -> its lines (``status: name: detail``)."""
    out: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():
        status, name, detail = line.split(": ", 2)
        assert status in ("ok", "warning", "FAILED"), line
        out.setdefault(name, []).append(f"{status}: {detail}")
    return out


class GroupAgent(Agent):
    """A real Serf agent whose handler line gives the store group, as README says to."""

    @property
    def handler(self) -> str:
        return f"{super().handler} --store-group {GROUP}"


@contextlib.contextmanager
def agent(base: Path, ip: str, membership: str, cls=GroupAgent, name: str = "node0"):
    serf = shutil.which("serf")
    if serf is None:
        missing("serf is not installed (apt-get install serf)")
    a = cls(name, ip, base, serf, membership)
    try:
        a.start()
        assert wait_until(lambda: (base / "live-nodes.json").exists(), 30), "first event"
        yield a
    finally:
        a.stop()
    assert not a.running()


@pytest.mark.serf
def test_doctor_on_a_healthy_node_says_ok_to_every_point(membership, installed, shared):
    base = shared / "healthy"
    _catalog(base, [IPS[0]])
    with agent(base, IPS[0], membership) as a:
        config = shared / "serf.json"
        config.write_text(json.dumps({"node_name": "node0", "event_handlers": [a.handler]}))
        args = ["--base-dir", str(base), "--rpc-addr", a.rpc, "--serf-config", str(config)]
        for user in (None, GROUP):  # root, and a reader in the group
            r = _doctor(installed if user else membership, *args, user=user)
            assert r.returncode == 0, r.stdout + r.stderr
            found = _lines(r)
            assert set(found) == {"store", "store readers", "catalog", "live file", "spool",
                                  "serf", "serf handler", "serf config"}
            assert all(line.startswith("ok: ") for lines in found.values() for line in lines)
            (store,) = found["store"]
            assert f"{base / 'membership.db'}: node store at schema" in store
            assert f"mode 0640, owner root, group {GROUP}" in store
            assert f"readable by root and group {GROUP} ({GROUP})" in store
            (live,) = found["live file"]
            assert "format droonga, 1 of 1 node(s) live" in live
            assert f"agent node0 at {a.rpc} answers: 1 member(s) (alive 1)" in \
                found["serf"][0]
            assert "which records into this store" in found["serf handler"][0]
        r = _doctor(membership, *args, "--json")
        doc = json.loads(r.stdout)
        assert list(doc) == ["checks"]
        assert [list(c) for c in doc["checks"]] == [["name", "status", "detail"]] * 8
        assert {c["status"] for c in doc["checks"]} == {"ok"}


def test_doctor_names_each_problem(membership, shared, tmp_path):
    base = shared / "sick"
    _catalog(base, IPS[:2])
    assert _handle(membership, base, "member-join", JOIN).returncode == 0
    dead = f"127.0.0.1:{free_port()}"
    args = ["--base-dir", str(base), "--rpc-addr", dead]

    r = _doctor(membership, *args)
    found = _lines(r)
    assert r.returncode == 1 and r.stderr == "membership: doctor: 1 of 5 point(s) failed\n"
    assert found["store"][0].startswith("ok: ") and "readable by its owner root only" in \
        found["store"][0]
    assert found["serf"] == [found["serf"][0]] and found["serf"][0].startswith("FAILED: ")
    assert dead in found["serf"][0] and "connection refused" in found["serf"][0]

    # Serf not installed: a warning, not a failure.
    r = _doctor(membership, *args, env={"PATH": "/nonexistent"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert _lines(r)["serf"][0].startswith("warning: serf is not installed")

    # Events waiting in the spool; a spool file nobody can read.
    old = _break_revision(base / "membership.db", "0099")
    _handle(membership, base, "member-failed", FAIL)
    _break_revision(base / "membership.db", old)
    found = _lines(_doctor(membership, *args))
    assert found["spool"][0].startswith("warning: 1 event(s) wait in ")
    (base / "spool" / "00000000000000000001-1-deadbeef.event").write_bytes(b"not a spool file")
    found = _lines(_doctor(membership, *args))
    assert found["spool"][0].startswith("FAILED: 1 file(s) in ")
    shutil.rmtree(base / "spool")

    # The live file: edited; the log's, in another format; a catalog not yet in force.
    live = base / "live-nodes.json"
    good = live.read_bytes()
    live.write_bytes(b"{}\n")
    found = _lines(_doctor(membership, *args))
    assert found["live file"][0].startswith("FAILED: format droonga: the live file ")
    assert "differs from a fresh fold" in found["live file"][0]
    subprocess.run([membership, "rebuild", "--base-dir", str(base), "--live-format",
                    "cluster-state"], check=True, capture_output=True)
    found = _lines(_doctor(membership, *args))
    assert found["live file"][0] == (f"FAILED: {live} is the log's live file in format "
                                     f"cluster-state, but --live-format says droonga")
    assert _lines(_doctor(membership, *args, "--live-format", "cluster-state"))[
        "live file"][0].startswith("ok: format cluster-state")
    live.write_bytes(good)
    (base / "catalog.json").write_bytes(catalog_for(IPS[:3]))
    found = _lines(_doctor(membership, *args))
    assert found["catalog"][0].startswith("warning: ") and "3 node(s)" in found["catalog"][0]
    assert "the next handler run (or membership init) records it" in found["catalog"][0]
    (base / "catalog.json").write_text("{not json")
    found = _lines(_doctor(membership, *args))
    assert found["catalog"][0].startswith("FAILED: ") and "not valid JSON" in \
        found["catalog"][0]

    # The agent's config: the '=' trap, a filter, another base dir, no handler at all.
    config = tmp_path / "serf.json"
    lines = [f"{membership} handle --base-dir={base}",
             f"MEMBERSHIP_BASE_DIR={base} {membership} handle",
             f"member-join={membership} handle --base-dir {base}",
             f"{membership} handle --base-dir {tmp_path}"]
    config.write_text(json.dumps({"event_handlers": lines}))
    found = _lines(_doctor(membership, *args, "--serf-config", str(config)))
    trap, env_trap, filtered, elsewhere = found["serf config"]
    assert trap.startswith("FAILED: ") and "as an event filter (the text before the first " \
        "'=')" in trap and "'--opt value'" in trap
    assert env_trap.startswith("FAILED: ") and "'MEMBERSHIP_BASE_DIR' is not a Serf event" \
        in env_trap and "refuses to start" in env_trap
    assert filtered.startswith("warning: ") and "only member-join events reach it" in filtered
    assert elsewhere.startswith("FAILED: ") and f"records into {tmp_path / 'membership.db'}" \
        in elsewhere
    config.write_text(json.dumps({"event_handlers": ["echo hi"]}))
    found = _lines(_doctor(membership, *args, "--serf-config", str(config)))
    assert found["serf config"][0].startswith("FAILED: ") and \
        "no event handler runs membership handle" in found["serf config"][0]

    # No store at all.
    r = _doctor(membership, "--base-dir", str(tmp_path / "none"), "--rpc-addr", dead)
    assert _lines(r)["store"] == [f"FAILED: no store at {tmp_path / 'none' / 'membership.db'} "
                                  f"(run: membership init)"]


@pytest.mark.postgres
def test_doctor_says_how_far_the_central_store_holds_this_log(membership, shared, pg_url):
    base = shared / "shipper"
    _catalog(base, IPS[:2])
    assert _handle(membership, base, "member-join", JOIN).returncode == 0
    args = ["--base-dir", str(base), "--rpc-addr", f"127.0.0.1:{free_port()}", "--central"]
    found = _lines(_doctor(membership, *args, pg_url))
    assert found["central"][0].startswith("FAILED: ") and "is not a membership-log store" in \
        found["central"][0]
    subprocess.run([membership, "db", "upgrade", "--db", pg_url], check=True,
                   capture_output=True)
    found = _lines(_doctor(membership, *args, pg_url))
    assert found["central"][0].endswith("holds node0's log up to event 0 of 2 (2 to ship: "
                                        "membership ship --to URL)")
    assert found["central"][0].startswith("warning: ")
    subprocess.run([membership, "ship", "--base-dir", str(base), "--to", pg_url], check=True,
                   capture_output=True)
    found = _lines(_doctor(membership, *args, pg_url))
    assert found["central"][0].startswith("ok: ") and "up to event 2, all of it" in \
        found["central"][0]
    # On the central store's own host: the store alone (no catalog, live file or agent).
    r = _doctor(membership, "--db", pg_url)
    assert r.returncode == 0, r.stdout + r.stderr
    (line,) = _lines(r)["store"]
    assert set(_lines(r)) == {"store"}
    assert "central store at schema" in line and "2 event(s) in 1 node log(s)" in line
    found = _lines(_doctor(membership, *args, f"sqlite:///{base / 'membership.db'}"))
    assert found["central"][0].startswith("FAILED: ") and "is a node store, not a central" \
        in found["central"][0]


# -- membership heartbeat --------------------------------------------------------------------


def _heartbeats(membership: str, base: Path) -> list[dict]:
    out = subprocess.run([membership, "replay", "--json", "--base-dir", str(base)],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in map(json.loads, out.splitlines()) if d["name"] == HEARTBEAT]


def _heartbeat_metrics(membership: str, base: Path) -> dict[str, float]:
    out = subprocess.run([membership, "metrics", "--base-dir", str(base)],
                         capture_output=True, text=True, check=True).stdout
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^membership_observer_last_heartbeat_timestamp_seconds\{observer="([^"]+)"\} (\S+)$',
        out, re.M)}


def _seconds(iso: str) -> float:
    from membership_log.core.timespec import parse

    return parse(iso, 0).us / 1e6


@pytest.mark.serf
def test_a_heartbeat_is_recorded_by_every_observer_and_exposed(membership, tmp_path):
    ips = IPS[2:4]
    with Cluster(tmp_path, 2, int(ips[0].rsplit(".", 1)[1]), catalog=catalog_for(ips)) as c:
        a, b = c.agents
        for x in (a, b):
            assert wait_until(lambda x=x: len(x.live()) == 2, 30), x.name
        r = subprocess.run([membership, "heartbeat", "--rpc-addr", a.rpc],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"sent {HEARTBEAT} from node0 through the Serf agent at {a.rpc}\n"
        # Serf's own environment variable names the agent too.
        r = subprocess.run([membership, "heartbeat"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "SERF_RPC_ADDR": b.rpc})
        assert r.returncode == 0 and "from node1" in r.stdout, r.stderr
        for x in (a, b):
            assert wait_until(lambda x=x: len(_heartbeats(membership, x.base_dir)) == 2, 30)
        for x in (a, b):
            beats = _heartbeats(membership, x.base_dir)
            assert sorted(d["payload"].strip() for d in beats) == ["node0", "node1"]
            assert all(d["observer"] == x.name and d["changes"] == [] for d in beats)
            exposed = _heartbeat_metrics(membership, x.base_dir)
            assert exposed == {d["payload"].strip(): pytest.approx(_seconds(d["at"]), abs=1e-3)
                               for d in beats}
            text = subprocess.run([membership, "metrics", "--base-dir", str(x.base_dir)],
                                  capture_output=True, text=True, check=True).stdout
            assert f'membership_build_info{{version="{__version__}"}} 1.0' in text
            assert "membership_spool_files 0.0" in text
        # The same through serve's /metrics, where Prometheus scrapes it.
        from opshelpers import Serve

        with Serve(membership, ["--base-dir", str(a.base_dir)], tmp_path) as serve:
            status, _, body = serve.get("/metrics")
            assert status == 200
            assert 'membership_observer_last_heartbeat_timestamp_seconds{observer="node1"}' \
                in body.decode()
            assert "membership_spool_files 0.0" in body.decode()
    assert not any(x.running() for x in c.agents)


def test_heartbeat_without_an_agent_is_one_line(membership, serf):
    dead = f"127.0.0.1:{free_port()}"
    r = subprocess.run([membership, "heartbeat", "--rpc-addr", dead], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"membership: serf info (the agent at {dead}) failed: ")
    r = subprocess.run([membership, "heartbeat"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PATH": "/nonexistent"})
    assert r.returncode == 1
    assert r.stderr == ("membership: serf is not installed (no serf command on PATH; on "
                        "Debian: apt-get install serf)\n")


# -- every unit, as written --------------------------------------------------------------------


def _unit(path: Path) -> dict:
    """A unit's [Service] section: keys -> list of values (ExecStart may repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def _one(unit: dict, key: str) -> str | None:
    found = unit.get(key)
    return found[-1] if found else None


class Service:
    """One unit's ExecStart, run the way systemd would run it (User=, Group=, the empty
    CapabilityBoundingSet=, NoNewPrivileges=, UMask=, Environment=, LoadCredential=), with
    the unit's paths and addresses rewritten to the test's."""

    def __init__(self, path: Path, rewrite: dict[str, str], creds: Path) -> None:
        self.path = path
        self.unit = _unit(path)
        self.user = _one(self.unit, "User")
        self.group = _one(self.unit, "Group")
        self.drop_caps = _one(self.unit, "CapabilityBoundingSet") == ""
        assert _one(self.unit, "NoNewPrivileges") == "yes"
        self.umask = int(_one(self.unit, "UMask") or "0022", 8)
        self.rewrite = dict(rewrite)
        if self.unit.get("LoadCredential"):
            d = creds / path.stem
            d.mkdir(parents=True, exist_ok=True)
            for spec in self.unit["LoadCredential"]:
                name, _, _source = spec.partition(":")
                f = d / name
                f.write_text("")  # trust auth here: the password file may be empty
                f.chmod(0o400)
                os.chown(f, pwd.getpwnam(self.user).pw_uid, -1)  # as systemd hands it over
            d.chmod(0o500)
            os.chown(d, pwd.getpwnam(self.user).pw_uid, -1)
            self.rewrite["%d"] = str(d)
        self.env = dict(SERVICE_ENV)
        for assignment in self.unit.get("Environment", []):
            key, _, value = self._sub(assignment).partition("=")
            self.env[key] = value
        self.commands = [shlex.split(self._sub(c)) for c in self.unit["ExecStart"]]

    def _sub(self, text: str) -> str:
        """Every path and address of the unit replaced: none of the unit's own is left."""
        tokens = {f"\0{i}\0": new for i, new in enumerate(self.rewrite.values())}
        for old, token in zip(self.rewrite, tokens, strict=True):
            text = text.replace(old, token)
        assert "example.net" not in text and "/var/lib/droonga" not in text, text
        assert "/opt/membership-log" not in text and "127.0.0.1:" not in text, text
        for token, new in tokens.items():
            text = text.replace(token, new)
        return text

    def popen(self, argv: list[str], out: Path, err: Path) -> subprocess.Popen:
        with open(out, "wb") as o, open(err, "wb") as e:
            return subprocess.Popen(as_user(self.user, self.group, self.drop_caps) + argv,
                                    stdout=o, stderr=e, stdin=subprocess.DEVNULL, cwd="/",
                                    env=self.env, preexec_fn=lambda: os.umask(self.umask))

    def run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(as_user(self.user, self.group, self.drop_caps) + argv,
                              capture_output=True, text=True, timeout=120, env=self.env,
                              cwd="/", preexec_fn=lambda: os.umask(self.umask))


def _main_pid(proc: subprocess.Popen) -> int:
    """The service's own process: runuser's child (runuser forks, waits and passes its exit
    status on), as systemd's MainPID is the command itself."""
    path = f"/proc/{proc.pid}/task/{proc.pid}/children"
    found = wait_for("the service's process", lambda: proc.poll() is None and (
        open(path).read().split() or None), timeout=30)
    return int(found[0])


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM to the service's process by pid (systemctl stop), SIGKILL if it does not go;
    its exit status."""
    if proc.poll() is None:
        main = _main_pid(proc)
        os.kill(main, signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(main, signal.SIGKILL)
            proc.wait(timeout=10)
            raise AssertionError(f"pid {main} ignored SIGTERM") from None
    return proc.returncode


@pytest.mark.serf
@pytest.mark.postgres
def test_every_unit_runs_as_written(membership, installed, shared, pg_url, alertmanager):
    """Each unit of examples/systemd/ run as its own user (the readers as the membership
    user, the writers as root without a capability), against a store that Serf's handler
    wrote as root with --store-group: serve answers a scrape, ship --follow ships,
    alerts --follow delivers, the daily ship-and-compact runs, the heartbeat is recorded."""
    base = shared / "var" / "lib" / "droonga"
    _catalog(base, IPS[4:6])
    subprocess.run([membership, "db", "upgrade", "--db", pg_url], check=True,
                   capture_output=True)
    with agent(base, IPS[4], membership) as a:
        # node1 has been down for two minutes (an export line, imported as root: alerts
        # --min-duration 30 sends only an incident that has lasted 30 s).
        down = {"seq": 1, "received": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z",
                                                    time.gmtime(time.time() - 120)),
                "observer": "node0", "source": "serf",
                "env": {"SERF_EVENT": "member-failed", "SERF_SELF_NAME": "node0"},
                "stdin_b64": __import__("base64").b64encode(
                    f"node1\t{IPS[5]}\t\t\n".encode()).decode(), "hash": "00"}
        subprocess.run([membership, "import", "--base-dir", str(base)], check=True,
                       input=json.dumps(down).encode() + b"\n", capture_output=True)
        db = base / "membership.db"
        assert (_mode(db), _group(db), os.stat(db).st_uid) == (0o640, GROUP, 0)

        port = free_port()
        rewrite = {"/opt/membership-log/bin/membership": installed,
                   "/var/lib/droonga": str(base),
                   "postgresql://membership@central.example.net:5432/membership": pg_url,
                   "http://127.0.0.1:9093": alertmanager.url,
                   "127.0.0.1:9137": f"127.0.0.1:{port}",
                   "127.0.0.1:7373": a.rpc}
        creds = shared / "credentials"
        units = {p.name: Service(p, rewrite, creds) for p in sorted(UNITS.glob("*.service"))}
        assert set(units) == {"membership-alerts.service", "membership-compact.service",
                              "membership-head.service", "membership-heartbeat.service",
                              "membership-serve.service", "membership-ship.service"}, \
            "a new unit needs a case here"
        ran = set()
        work = shared / "out"
        work.mkdir()

        def local_head() -> int:
            return _query(db, "SELECT max(seq) FROM event")

        # The heartbeat: a oneshot, as the membership user, recorded by the agent's handler.
        u = units["membership-heartbeat.service"]
        assert u.user == GROUP
        (cmd,) = u.commands
        r = u.run(cmd)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"sent {HEARTBEAT} from node0 through the Serf agent at {a.rpc}\n"
        assert wait_until(lambda: _heartbeats(membership, base), 30), "recorded"
        ran.add(u.path.name)

        # The head: a oneshot reader, as the membership user on the store root wrote; the
        # agent's handler records the published head in the log.
        u = units["membership-head.service"]
        assert (u.user, u.group, u.drop_caps) == (GROUP, GROUP, True)
        (cmd,) = u.commands
        r = u.run(cmd)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("node0: size ") and "published" in r.stdout, r.stdout
        assert wait_until(lambda: _query(db, "SELECT count(*) FROM witness_head") >= 1, 30), \
            "recorded"
        ran.add(u.path.name)

        # serve: starts, answers a scrape and the API, stops by pid with exit 0.
        u = units["membership-serve.service"]
        assert (u.user, u.group, u.drop_caps) == (GROUP, GROUP, True)
        (cmd,) = u.commands
        proc = u.popen(cmd, work / "serve.out", work / "serve.err")
        try:
            wait_for("serve to listen", lambda: f"listening on http://127.0.0.1:{port}/" in
                     (work / "serve.err").read_text() or proc.poll() is not None)
            assert proc.poll() is None, (work / "serve.err").read_text()
            status, _, body = get(f"http://127.0.0.1:{port}/metrics")
            text = body.decode()
            assert status == 200, text
            assert "membership_node_up{" in text and "membership_spool_files 0.0" in text
            assert 'membership_observer_last_heartbeat_timestamp_seconds{observer="node0"}' \
                in text
            status, _, body = get(f"http://127.0.0.1:{port}/api/state")
            assert status == 200 and json.loads(body)["seq"] == local_head()
        finally:
            assert _stop(proc) == 0
        assert "cannot" not in (work / "serve.err").read_text()
        ran.add(u.path.name)

        # ship --follow: ships everything, stops by pid with exit 0.
        u = units["membership-ship.service"]
        assert (u.user, u.drop_caps) == (GROUP, True) and u.env["PGPASSFILE"].startswith(
            str(creds))
        (cmd,) = u.commands
        proc = u.popen(cmd, work / "ship.out", work / "ship.err")
        try:
            head = local_head()
            wait_for("ship --follow to ship", lambda: max(map(int, re.findall(
                r"holds its events up to (\d+)", (work / "ship.out").read_text())),
                default=0) >= head or proc.poll() is not None)
            assert proc.poll() is None, (work / "ship.err").read_text()
        finally:
            assert _stop(proc) == 0
        ran.add(u.path.name)

        # alerts --follow: a writer, as root without capabilities; delivers node1's
        # incident, records the delivery in the store, stops by pid with exit 0.
        u = units["membership-alerts.service"]
        assert (u.user, u.group, u.drop_caps) == ("root", GROUP, True)
        (cmd,) = u.commands
        proc = u.popen(cmd, work / "alerts.out", work / "alerts.err")
        try:
            wait_for("the alert in Alertmanager", lambda: [
                x for x in alertmanager.alerts()
                if x["labels"].get("node") == f"{IPS[5]}:10031/droonga"
                and x["labels"].get("alertname") == "MembershipNodeDown"]
                or proc.poll() is not None)
            assert proc.poll() is None, (work / "alerts.err").read_text()
            wait_for("the delivery recorded", lambda: _query(
                db, "SELECT count(*) FROM alert_delivery") == 1)
        finally:
            assert _stop(proc) == 0
        ran.add(u.path.name)

        # The daily ship and compact, as root without capabilities, one command after the
        # other (Type=oneshot).
        u = units["membership-compact.service"]
        assert (u.user, u.drop_caps) == ("root", True) and len(u.commands) == 2
        ship, compact = (u.run(c) for c in u.commands)
        assert ship.returncode == 0 and "the central store holds its events up to" in \
            ship.stdout, ship.stderr
        assert compact.returncode == 0 and compact.stdout.startswith("nothing to compact"), \
            compact.stderr
        ran.add(u.path.name)
        assert ran == set(units)

        # Every writer kept the store the group's, with -wal and -shm for its readers, and
        # the handler went on recording.
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert (_mode(p), _group(p)) == (0o640, GROUP), p
        r = run_as(GROUP, [installed, "verify", "--base-dir", str(base)])
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_as(GROUP, [installed, "doctor", "--base-dir", str(base), "--rpc-addr", a.rpc,
                           "--central", pg_url])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ok: central: " in r.stdout and "all of it" in r.stdout
