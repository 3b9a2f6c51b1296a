"""Nothing lost, nothing corrupted, nothing trusted: the real CLI on real SQLite files,
killed, raced, starved of disk, tampered with."""

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from samples import NODES
from typer.testing import CliRunner

from membership_log.cli import app
from membership_log.core import fold as project
from membership_log.core.codec import decode_state
from membership_log.core.raw import decode_env
from membership_log.history import driver as derive
from membership_log.render import livefile
from membership_log.stores.files import write_atomic
from membership_log.stores.node import NODE, NodeStore

pytestmark = pytest.mark.e2e

runner = CliRunner()
N0, N1, N2 = NODES


def verify(base) -> subprocess.CompletedProcess:
    return runner.invoke(app, ["verify", "--base-dir", str(base)])


def serf_env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
    env.update({"SERF_SELF_NAME": "node0", **kw})
    return env


def fresh_fold_live(base) -> bytes:
    """The live file a fold of the whole raw log from scratch gives (no derived state used)."""
    state = project.State()
    with NodeStore(str(base / "membership.db")) as st:
        for _ in derive.forward(state, st.events(NODE, 0)):
            pass
    return livefile.render(project.live_nodes(state))


# -- faults ---------------------------------------------------------------------------------


class LiveFileReader(threading.Thread):
    """Keeps reading and parsing the live file, as Droonga's engine would."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.reads = 0
        self.bad: list[str] = []

    def run(self):
        while not self.stop.is_set():
            try:
                json.loads(self.path.read_bytes())
                self.reads += 1
            except FileNotFoundError:
                self.bad.append("missing")
            except ValueError as e:
                self.bad.append(f"partial: {e}")


def test_handler_killed_at_random_moments_loses_nothing_it_acknowledged(handle, base,
                                                                        membership):
    (base / "catalog.json").unlink()  # members are the nodes: every event changes the file
    assert handle("member-join", b"seed\t10.0.0.1\t\t\n").returncode == 0
    # Kill within 0-1.6x of the handler's whole run as measured here and now, so the kills
    # land inside it and after it whatever the machine's speed.
    runs = []
    for i in range(5):
        start = time.perf_counter()
        assert handle("member-update", f"seed\t10.0.0.{i + 1}\t\t\n".encode()).returncode == 0
        runs.append(time.perf_counter() - start)
    window = 1.6 * sorted(runs)[2]
    reader = LiveFileReader(base / "live-nodes.json")
    reader.start()
    rng = random.Random(6)
    acknowledged, killed = [], 0
    try:
        for trial in range(100):
            name = f"t{trial:03d}"
            kind = "member-join" if trial % 3 else "member-failed"
            p = subprocess.Popen([membership, "handle", "--base-dir", str(base)],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=serf_env(SERF_EVENT=kind))
            p.stdin.write(f"{name}\t10.1.{trial // 250}.{trial % 250}\t\t\n".encode())
            p.stdin.close()
            time.sleep(rng.uniform(0, window))
            p.send_signal(signal.SIGKILL)
            if p.wait() == 0:
                acknowledged.append(name)
            else:
                killed += 1
            r = verify(base)
            assert r.exit_code == 0, f"trial {trial}: {r.output}"
    finally:
        reader.stop.set()
        reader.join()
    print(f"\ncrash trials: 100, acknowledged {len(acknowledged)}, killed {killed}, "
          f"live-file reads {reader.reads}, bad reads {len(reader.bad)}")
    assert reader.bad == [], reader.bad[:5]
    assert reader.reads > 100
    assert 10 < killed < 100, "the kills must land both inside and after the handler's work"
    with sqlite3.connect(base / "membership.db") as c:
        stored = {bytes(s).split(b"\t")[0].decode()
                  for (s,) in c.execute("SELECT stdin FROM event")}
    assert set(acknowledged) <= stored
    # The next run catches up whatever a killed run recorded but did not fold.
    assert handle("member-update", b"seed\t10.0.0.1\t\t\n").returncode == 0
    assert (base / "live-nodes.json").read_bytes() == fresh_fold_live(base)


def test_a_set_up_killed_midway_is_finished_by_the_next_run(membership, tmp_path):
    rng = random.Random(7)
    for trial in range(10):
        base = tmp_path / f"b{trial}"
        base.mkdir()
        p = subprocess.Popen([membership, "handle", "--base-dir", str(base)],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=serf_env(SERF_EVENT="member-join"))
        p.stdin.write(b"a\t10.0.0.1\t\t\n")
        p.stdin.close()
        time.sleep(rng.uniform(0, 0.5))  # set-up (Alembic) takes ~0.5-1 s
        p.kill()
        p.wait()
        r = subprocess.run([membership, "handle", "--base-dir", str(base)],
                           input=b"b\t10.0.0.2\t\t\n", capture_output=True,
                           env=serf_env(SERF_EVENT="member-join"))
        assert r.returncode == 0, r.stderr
        assert "b" in json.loads((base / "live-nodes.json").read_bytes())
        assert verify(base).exit_code == 0


def test_eight_concurrent_handlers_keep_a_gap_free_log_and_a_live_file_that_never_regresses(
        handle, base, membership):
    (base / "catalog.json").unlink()
    assert handle("member-join", b"seed\t10.0.0.1\t\t\n").returncode == 0

    def worker(w):
        rng = random.Random(w)
        failures = []
        for _ in range(200):
            m = rng.randrange(20)
            kind = rng.choice(["member-join", "member-failed"])
            r = subprocess.run([membership, "handle", "--base-dir", str(base)],
                               input=f"m{m}\t10.2.0.{m}\t\t\n".encode(), capture_output=True,
                               env=serf_env(SERF_EVENT=kind, SERF_SELF_NAME=f"w{w}"))
            if r.returncode != 0 or r.stderr:
                failures.append((r.returncode, r.stderr[:200]))
        return failures

    with ThreadPoolExecutor(8) as pool:
        failures = [f for fs in pool.map(worker, range(8)) for f in fs]
    assert failures == []
    with sqlite3.connect(base / "membership.db") as c:
        seqs = [s for (s,) in c.execute("SELECT seq FROM event ORDER BY seq")]
    assert seqs == list(range(1, 1 + 1 + 8 * 200)), "gap-free, every run recorded"
    assert (base / "live-nodes.json").read_bytes() == fresh_fold_live(base)
    assert verify(base).exit_code == 0
    assert list(base.glob("spool/*.event")) == [], "nothing had to be spooled"


class ReadOnly:
    """Makes a file or directory unwritable, for root too: the immutable attribute as root
    (file modes do not stop root), plain modes otherwise."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(self.path)], check=True)
        else:
            self.path.chmod(0o555 if self.path.is_dir() else 0o444)

    def __exit__(self, *exc):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(self.path)], check=True)
        else:
            self.path.chmod(0o755 if self.path.is_dir() else 0o600)


@pytest.mark.parametrize("how", ["read-only file", "read-only directory"])
def test_unwritable_store_spools_then_the_next_writable_run_takes_it_in(handle, base, how):
    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0
    (base / "spool").mkdir()
    with ReadOnly(base / "membership.db" if how == "read-only file" else base):
        r = handle("member-failed", b"node1\t192.168.100.51\t\t\n")
        assert r.returncode == 0, r.stderr
        assert r.stderr.count(b"\n") == 1 and b"spooled" in r.stderr, r.stderr
        (spooled,) = (base / "spool").glob("*.event")
        v = verify(base)  # a read-only directory cannot even be opened (WAL): also exit 1
        assert v.exit_code == 1
        assert "wait in the spool" in v.output or how == "read-only directory"
    r = handle("member-update", b"node2\t192.168.100.52\t\t\n")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(base / "membership.db") as c:
        rows = c.execute("SELECT env, received_us FROM event ORDER BY seq").fetchall()
    kinds = [decode_env(e).get("SERF_EVENT") for e, _ in rows]
    assert kinds == [None, "member-join", "member-failed", "member-update"]
    assert rows[2][1] == int(spooled.name.split("-")[0]), "original receive time kept"
    assert list(handle.live()) == [N0, N2]
    assert list((base / "spool").glob("*.event")) == []
    assert verify(base).exit_code == 0


def test_disk_full_spools_and_nothing_is_lost(handle, base, membership):
    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0

    def tiny_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # < one WAL page

    r = subprocess.run([membership, "handle", "--base-dir", str(base)],
                       input=b"node1\t192.168.100.51\t\t\n", capture_output=True,
                       env=serf_env(SERF_EVENT="member-failed"), preexec_fn=tiny_disk)
    assert r.returncode == 0, r.stderr
    assert b"spooled" in r.stderr and (b"full" in r.stderr or b"disk" in r.stderr), r.stderr
    assert handle("member-update", b"node1\t192.168.100.51\t\t\n").returncode == 0
    kinds = [decode_env(e).get("SERF_EVENT") for _, _, e, _ in handle.rows()]
    assert kinds == [None, "member-join", "member-failed", "member-update"]
    assert list(handle.live()) == [N0, N2]


def test_catalog_missing_unreadable_or_invalid_mid_run(handle, base):
    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0
    good = (base / "catalog.json").read_bytes()
    (base / "catalog.json").unlink()
    first = handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    second = handle("member-join", b"node1\t192.168.100.51\t\t\n")
    assert first.returncode == second.returncode == 0
    assert b"catalog" in first.stderr and first.stderr.count(b"\n") == 1
    assert second.stderr == b"", "warned once, not on every event"
    assert list(handle.live()) == NODES, "the last good catalog stays in force"
    (base / "catalog.json").mkdir()  # unreadable as a file
    assert handle("member-failed", b"node2\t192.168.100.52\t\t\n").returncode == 0
    assert list(handle.live()) == [N0, N1]
    (base / "catalog.json").rmdir()
    (base / "catalog.json").write_bytes(b'{"version": 2, "datasets": ')
    bad = handle("member-join", b"node2\t192.168.100.52\t\t\n")
    assert bad.returncode == 0 and b"not valid JSON" in bad.stderr
    assert handle("member-update", b"node2\t192.168.100.52\t\t\n").stderr == b""
    assert list(handle.live()) == NODES
    (base / "catalog.json").write_bytes(good)
    handle("member-update", b"node2\t192.168.100.52\t\t\n")
    sources = [s for _, s, _, _ in handle.rows()]
    assert sources.count("catalog") == 4, "first, vanished, invalid, good again"
    assert verify(base).exit_code == 0


def test_catalog_with_duplicate_and_malformed_addresses(handle, base):
    doc = {"version": 2, "datasets": {"D": {"replicas": [{"slices": [
        {"volume": {"address": "10.0.0.1:10031/droonga.000"}},
        {"volume": {"address": "10.0.0.1:10031/droonga.000"}},
        {"volume": {"address": "not an address"}},
        {"volume": {"address": None}}]}]}}}
    (base / "catalog.json").write_text(json.dumps(doc))
    r = handle("member-join", b"x\t10.0.0.9\t\t\n")
    assert r.returncode == 0 and b"volume address must be" in r.stderr
    assert list(handle.live()) == ["10.0.0.1:10031/droonga"]


# -- trust ----------------------------------------------------------------------------------


@pytest.fixture
def history(handle, base):
    for ev_, stdin in [("member-join", b"node1\t192.168.100.51\t\t\n"),
                       ("member-failed", b"node1\t192.168.100.51\t\t\n"),
                       ("member-join", b"node1\t192.168.100.51\t\t\n"),
                       ("member-leave", b"node2\t192.168.100.52\t\t\n")]:
        assert handle(ev_, stdin).returncode == 0
    assert verify(base).exit_code == 0
    return base


def _tamper(base, *statements):
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("DROP TRIGGER event_no_update")
        c.execute("DROP TRIGGER event_no_delete")
        for s in statements:
            c.execute(s)


@pytest.mark.parametrize("statements,first_bad", [
    (["UPDATE event SET stdin = x'00' WHERE seq = 3"], 3),                       # edited
    (["UPDATE event SET observer = 'mallory' WHERE seq = 2"], 2),               # edited
    (["DELETE FROM event WHERE seq = 2"], 2),                                   # deleted
    (["UPDATE event SET seq = seq + 100 WHERE seq >= 3",
      "UPDATE event SET seq = seq - 99 WHERE seq >= 103",
      "INSERT INTO event SELECT 3, received_us, observer, source, env, stdin, hash"
      " FROM event WHERE seq = 2"], 3),                                          # inserted
    (["UPDATE event SET seq = 100 WHERE seq = 3", "UPDATE event SET seq = 3 WHERE seq = 4",
      "UPDATE event SET seq = 4 WHERE seq = 100"], 3),                          # reordered
    (["DELETE FROM event WHERE seq = 5"], 5),                                   # last deleted
])
def test_verify_detects_tampering_and_names_the_first_bad_event(history, statements,
                                                                first_bad):
    _tamper(history, *statements)
    r = verify(history)
    assert r.exit_code == 1
    assert f"first bad event {first_bad}" in r.output, r.output


def test_verify_detects_derived_disagreement_and_rebuild_repairs_only_derived(history):
    with sqlite3.connect(history / "membership.db") as c:
        raw_before = c.execute("SELECT * FROM event ORDER BY seq").fetchall()
        c.execute("UPDATE snapshot SET live = x'7b7d0a'")
    r = verify(history)
    assert r.exit_code == 1 and "snapshot's live-file bytes" in r.output
    assert runner.invoke(app, ["rebuild", "--base-dir", str(history)]).exit_code == 0
    assert verify(history).exit_code == 0
    (history / "live-nodes.json").write_text("{}\n")
    r = verify(history)
    assert r.exit_code == 1 and "live file" in r.output and "differs" in r.output
    out = runner.invoke(app, ["rebuild", "--base-dir", str(history)])
    assert out.exit_code == 0 and "rebuilt from 5 events" in out.output
    assert verify(history).exit_code == 0
    with sqlite3.connect(history / "membership.db") as c:
        assert c.execute("SELECT * FROM event ORDER BY seq").fetchall() == raw_before


def test_a_payload_is_data_never_code(handle, base, tmp_path):
    canary = tmp_path / "pwned"
    payload = f"$(touch {canary}); `touch {canary}`; '; DROP TABLE event; --".encode()
    r = handle("user", payload, {"SERF_USER_EVENT": "membership-down; touch x",
                                 "SERF_USER_LTIME": "1"})
    assert r.returncode == 0
    assert not canary.exists()
    assert handle.rows()[-1][3] == payload


# -- bad stores -----------------------------------------------------------------------------


def _bad_store(kind: str, tmp_path: Path) -> Path:
    base = tmp_path / kind
    base.mkdir()
    db = base / "membership.db"
    if kind == "empty":
        db.touch()
    elif kind == "foreign":
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    elif kind == "newer":
        runner.invoke(app, ["init", "--base-dir", str(base)])
        with sqlite3.connect(db) as c:
            c.execute("UPDATE alembic_version SET version_num = '9999_future'")
    elif kind == "garbage":
        db.write_bytes(os.urandom(4096))
    return base


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign", "newer", "garbage"])
@pytest.mark.parametrize("command", [["state"], ["state", "--at", "@1"], ["replay"], ["audit"],
                                     ["timeline", "-o", "x.svg"], ["verify"], ["rebuild"]])
def test_every_read_command_answers_a_bad_store_with_one_line(membership, tmp_path, kind,
                                                              command):
    base = _bad_store(kind, tmp_path)
    r = subprocess.run([membership, *command, "--base-dir", str(base)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("membership: "), r.stderr
    assert "Traceback" not in r.stderr


def test_verify_accepts_a_live_file_left_between_the_snapshot_and_the_head(handle, base):
    """Two kills in a row: one after writing the live file for event N but before its fold
    committed (snapshot at N-1), the next after recording N+1 (not folded). The live file
    then shows event N: lagging, not corrupt."""
    from membership_log import settings
    from membership_log.core import events
    from membership_log.core.raw import encode_env

    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0
    s = settings.resolve(str(base))
    store = NodeStore(s.sqlite_path)
    try:
        with store.write():
            store.append([(10**15 + i, "node0", "serf", encode_env({"SERF_EVENT": kind}),
                           b"node1\t192.168.100.51\t\t\n")
                          for i, kind in enumerate(["member-failed", "member-join"])])
        snap = store.snapshot(NODE)
        snapshot_state = decode_state(snap[1], bytes(snap[2]))
        event_n = events.parse(list(store.events(NODE, 0))[-2])
    finally:
        store.close()
    assert snapshot_state is not None and snapshot_state.seq == event_n.seq - 1
    after_n = project.fold([event_n], snapshot_state)
    write_atomic(s.live_file, livefile.render_view(after_n.nodes))  # event N's file
    r = verify(base)
    assert r.exit_code == 0, r.output
    assert "not folded yet" in r.output
    (base / "live-nodes.json").write_text("{}\n")
    assert verify(base).exit_code == 1, "a file matching no state since the snapshot fails"
