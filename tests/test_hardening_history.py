"""Issue 17, second hardening pass, on the history's side: forged retention anchors, a
future receive time, secrets and bad lines through import, a database that accepts and says
nothing, and a catalog after a compaction. Each through the real CLI and real SQLite (and
PostgreSQL where it touches the central store); each failed before its fix."""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import cli
from samples import CATALOG_V2

pytestmark = pytest.mark.e2e

START = 1_764_000_000_000_000  # 2025-11-24T16:00:00Z


def iso(us: int) -> str:
    from membership_log.core.timespec import iso as _iso

    return _iso(us)


def line(seq: int, at: int, env: dict, stdin: bytes = b"", source: str = "serf",
         observer: str = "node0") -> str:
    return json.dumps({"seq": seq, "received": iso(at), "observer": observer,
                       "source": source, "env": env,
                       "stdin_b64": base64.b64encode(stdin).decode(), "hash": ""})


def member(kind: str, name: str, address: str) -> tuple[dict, bytes]:
    return ({"SERF_EVENT": kind, "SERF_SELF_NAME": "node0"},
            f"{name}\t{address}\t\t\n".encode())


def catalog_line(seq: int, at: int) -> str:
    return line(seq, at, {}, json.dumps(CATALOG_V2).encode(), source="catalog")


def write_log(path: Path, kinds: list[str]) -> Path:
    """A catalog, node0 joining, then node1 (192.168.100.51) through ``kinds``."""
    lines = [catalog_line(1, START), line(2, START + 1000, *member(
        "member-join", "node0", "192.168.100.50"))]
    for i, kind in enumerate(kinds):
        lines.append(line(3 + i, START + (2 + i) * 1000, *member(kind, "node1",
                                                                  "192.168.100.51")))
    path.write_text("\n".join(lines) + "\n")
    return path


def ok(membership, *args, input: bytes | None = None) -> str:
    r = cli(membership, *args, input=input)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def fails(membership, *args, code: int = 1) -> str:
    r = cli(membership, *args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("membership: "), err
    return err


# -- 1. a forged retention anchor ---------------------------------------------------------------


def test_01_an_anchor_state_copied_from_another_store_fails_verify_and_rebuild(membership,
                                                                               tmp_path):
    """Two stores compacted at @4: in one node1 joined, in the other it failed. Copying one
    anchor's state into the other by hand is caught by verify, and rebuild refuses to fold
    from it; the live file stays as it was."""
    bases = {}
    for name, kinds in (("joined", ["member-join", "member-join"]),
                        ("failed", ["member-failed", "member-failed"])):
        base = tmp_path / name
        ok(membership, "import", "--base-dir", str(base),
           str(write_log(tmp_path / f"{name}.jsonl", kinds)))
        ok(membership, "compact", "--base-dir", str(base), "--before", "@5", "--force")
        assert "hash chain intact" in ok(membership, "verify", "--base-dir", str(base))
        bases[name] = base
    with sqlite3.connect(bases["failed"] / "membership.db") as c:
        forged = c.execute("SELECT state FROM anchor").fetchone()[0]
    victim = bases["joined"]
    live_before = (victim / "live-nodes.json").read_bytes()
    with sqlite3.connect(victim / "membership.db") as c:
        c.execute("UPDATE anchor SET state = ?", (forged,))
    r = cli(membership, "verify", "--base-dir", str(victim))
    assert r.returncode == 1
    assert b"the retention anchor at event 4 differs from its record in the log" in r.stdout, \
        r.stdout
    err = fails(membership, "rebuild", "--base-dir", str(victim))
    assert "rebuild refuses to fold from this anchor" in err
    assert (victim / "live-nodes.json").read_bytes() == live_before, "nothing refolded"
    assert b"192.168.100.51" in live_before


def test_01_an_anchor_with_no_record_in_the_log_fails_verify(membership, tmp_path):
    base = tmp_path / "n"
    ok(membership, "import", "--base-dir", str(base),
       str(write_log(tmp_path / "n.jsonl", ["member-failed", "member-join"])))
    ok(membership, "compact", "--base-dir", str(base), "--before", "@4", "--force")
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("UPDATE anchor SET seq = 2, hash = (SELECT hash FROM anchor)")
    r = cli(membership, "verify", "--base-dir", str(base))
    assert r.returncode == 1 and b"is not recorded in the log" in r.stdout, r.stdout


def test_02_an_anchor_row_planted_in_a_central_store_does_not_hide_an_edited_event(
        membership, tmp_path, pg_url):
    """Edit a shipped event (its trigger disabled), then plant an anchor row at the head, as
    a node's compaction would have it: verify still fails, and names the anchor row."""
    from sqlalchemy import create_engine, text

    from membership_log.stores.connect import driver_url

    base = tmp_path / "n"
    ok(membership, "import", "--base-dir", str(base),
       str(write_log(tmp_path / "n.jsonl", ["member-failed", "member-join"])))
    ok(membership, "db", "upgrade", "--db", pg_url)
    ok(membership, "ship", "--base-dir", str(base), "--to", pg_url)
    engine = create_engine(driver_url(pg_url))
    with engine.begin() as c:
        c.execute(text("ALTER TABLE cluster_event DISABLE TRIGGER USER"))
        c.execute(text("UPDATE cluster_event SET observer = 'mallory' WHERE seq = 3"))
        c.execute(text("ALTER TABLE cluster_event ENABLE TRIGGER USER"))
    r = cli(membership, "verify", "--db", pg_url)
    assert r.returncode == 1 and b"event 3 does not match its hash" in r.stdout, r.stdout
    with engine.begin() as c:
        c.execute(text(
            "INSERT INTO anchor (origin, seq, hash, received_us, max_at, format, state) "
            "SELECT 'node0', e.seq, e.hash, e.received_us, e.received_us, s.format, s.state "
            "FROM cluster_event e, snapshot s WHERE e.origin = 'node0' AND s.origin = 'node0' "
            "AND e.seq = s.seq"))
    engine.dispose()
    r = cli(membership, "verify", "--db", pg_url)
    assert r.returncode == 1, r.stdout
    assert b"event 3 does not match its hash" in r.stdout
    assert b"node0: the central store has a retention anchor" in r.stdout
    assert b"0 events, hash chain intact" not in r.stdout
    replayed = ok(membership, "replay", "--db", pg_url, "--observer", "node0", "--json")
    assert len(replayed.splitlines()) == 4, "the central store reads every shipped event"


# -- 4. a receive time in the future --------------------------------------------------------


def test_04_one_event_from_2099_does_not_hide_the_later_ones(membership, tmp_path):
    """An import line from 2099 among ordinary ones: --at now is the live file, and
    --until now shows every event."""
    future = 4_070_908_800_000_000  # 2099-01-01
    now = int(time.time() * 1e6)
    lines = [catalog_line(1, now - 10_000_000),
             line(2, future, *member("member-join", "node0", "192.168.100.50")),
             line(3, now - 5_000_000, *member("member-failed", "node1", "192.168.100.51")),
             line(4, now - 4_000_000, *member("member-failed", "node2", "192.168.100.52"))]
    base = tmp_path / "n"
    ok(membership, "import", "--base-dir", str(base), "-", input=("\n".join(lines) +
                                                                  "\n").encode())
    live = (base / "live-nodes.json").read_bytes()
    r = cli(membership, "state", "--base-dir", str(base), "--at", "now", "--as-live-file")
    assert r.returncode == 0 and r.stdout == live, (r.stdout, live)
    assert b"192.168.100.51" not in live and b"192.168.100.50" in live
    seqs = [json.loads(x)["seq"] for x in ok(membership, "replay", "--base-dir", str(base),
                                             "--until", "now", "--json").splitlines()]
    assert seqs == [1, 2, 3, 4]
    # A moment between the ordinary events: the state after the last event received by then.
    at = iso(now - 4_500_000)
    state = json.loads(ok(membership, "state", "--base-dir", str(base), "--at", at, "--json"))
    assert state["seq"] == 3
    assert "hash chain intact" in ok(membership, "verify", "--base-dir", str(base))


# -- 5. secrets through import --------------------------------------------------------------


def test_05_import_keeps_exactly_what_the_handler_would_have_kept(membership, tmp_path,
                                                                  pg_url):
    secret, key = "s3cr3t-rpc-key-xyz", "AKIA-secret-access-key-abc"
    env = {"SERF_EVENT": "member-join", "SERF_SELF_NAME": "node0",
           "SERF_RPC_AUTH": secret, "AWS_SECRET_ACCESS_KEY": key, "SERF_TAG_ROLE": "x"}
    lines = [catalog_line(1, START),
             line(2, START + 1000, env, b"node1\t192.168.100.51\t\t\n"),
             line(3, START + 2000, {**env, "SERF_EVENT": "member-failed"},
                  b"node1\t192.168.100.51\t\t\n")]
    base = tmp_path / "n"
    r = cli(membership, "import", "--base-dir", str(base), "-",
            input=("\n".join(lines) + "\n").encode())
    assert r.returncode == 0, r.stderr
    assert b"dropped variables the handler never records from 2 line(s): " \
           b"AWS_SECRET_ACCESS_KEY, SERF_RPC_AUTH" in r.stderr, r.stderr
    stored = b"".join(p.read_bytes() for p in base.iterdir() if p.name.startswith("membership"))
    assert secret.encode() not in stored and key.encode() not in stored
    exported = ok(membership, "export", "--base-dir", str(base))
    assert secret not in exported and key not in exported and "SERF_TAG_ROLE" in exported
    ok(membership, "db", "upgrade", "--db", pg_url)
    ok(membership, "ship", "--base-dir", str(base), "--to", pg_url)
    central = ok(membership, "export", "--db", pg_url, "--observer", "node0")
    assert secret not in central and key not in central
    assert "hash chain intact" in ok(membership, "verify", "--base-dir", str(base))


# -- 13. every bad import line is "line N: ..." ----------------------------------------------


@pytest.mark.parametrize("bad, says", [
    ('{"seq":1,"received":"2026-11-25T03:12:00.12345\u00b2Z","observer":"n","source":"serf",'
     '"env":{},"stdin_b64":"","hash":""}', "received"),
    ('{"seq":1,"received":"2026-11-25T03:12:00.123456Z","observer":"\\ud800","source":"serf",'
     '"env":{},"stdin_b64":"","hash":""}', "observer holds U+D800"),
    ('{"seq":1,"received":"2026-11-25T03:12:00.123456Z","observer":"n","source":"serf",'
     '"env":{"SERF_EVENT":"\\ud800"},"stdin_b64":"","hash":""}', "holds U+D800"),
    ('{"seq":1,"received":"2026-11-25T03:12:00.123456Z","observer":"n","source":"serf",'
     '"env":{"\\udfff":"x"},"stdin_b64":"","hash":""}', "holds U+DFFF"),
])
def test_13_bad_import_lines_name_their_line_and_nothing_is_kept(membership, tmp_path, bad,
                                                                 says):
    good = line(1, START, {"SERF_EVENT": "member-join", "SERF_SELF_NAME": "n"},
                b"n1\t10.0.0.1\t\t\n")
    base = tmp_path / "n"
    r = cli(membership, "import", "--base-dir", str(base), "-",
            input=(good + "\n" + bad + "\n").encode())
    err = r.stderr.decode()
    assert r.returncode == 1 and err.startswith("membership: line 2: ") and says in err, err
    assert "internal error" not in err and err.count("\n") == 1
    assert not (base / "membership.db").exists(), "a failed import leaves no store behind"
    assert not (base / "live-nodes.json").exists()


# -- 9. a database that accepts connections and answers nothing ------------------------------


class Blackhole:
    """A TCP listener on loopback that accepts connections and never answers, until
    ``forward_to(port)``; from then on it forwards new connections to that port."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.target: int | None = None
        self.held: list[socket.socket] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def forward_to(self, port: int) -> None:
        self.target = port
        for s in self.held:
            s.close()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if self.target is None:
                self.held.append(conn)
                continue
            up = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop = True
        self.sock.close()
        for s in self.held:
            s.close()


def test_09_ship_follow_reports_a_silent_database_and_ships_everything_once_it_answers(
        membership, tmp_path, pg_url):
    from opshelpers import Proc, wait_for

    base = tmp_path / "n"
    ok(membership, "import", "--base-dir", str(base),
       str(write_log(tmp_path / "n.jsonl", ["member-failed", "member-join"])))
    ok(membership, "db", "upgrade", "--db", pg_url)
    hole = Blackhole()
    head, _, rest = pg_url.partition("@")
    host_port, _, db = rest.partition("/")
    silent = f"{head}@127.0.0.1:{hole.port}/{db}"
    proc = Proc(membership, ["ship", "--base-dir", str(base), "--to", silent, "--follow",
                             "--interval", "0.5"], tmp_path, "ship")
    try:
        wait_for("the outage reported", lambda: "retrying" in proc.stdout(), timeout=40)
        assert proc.stdout().count("retrying") == 1
        hole.forward_to(int(host_port.rpartition(":")[2] or 5432))
        wait_for("4 events shipped", lambda: "holds its events up to 4" in proc.stdout(),
                 timeout=60)
    finally:
        assert proc.stop() == 0
        hole.close()
    assert "reachable again" in proc.stdout()
    out = ok(membership, "verify", "--db", pg_url)
    assert "node0: 4 events, hash chain intact" in out


# -- also: a catalog after a compaction that dropped every catalog event -----------------------


def test_the_catalog_in_force_after_compaction_is_not_recorded_again(membership, tmp_path,
                                                                    handle):
    base = Path(handle.base)
    assert handle("member-join", b"node0\t192.168.100.50\t\t\n").returncode == 0
    assert handle("member-failed", b"node1\t192.168.100.51\t\t\n").returncode == 0
    ok(membership, "compact", "--base-dir", str(base), "--before", "now", "--force")
    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0
    with sqlite3.connect(base / "membership.db") as c:
        sources = [r[0] for r in c.execute("SELECT source FROM event ORDER BY seq")]
    assert "catalog" not in sources, sources
    assert sources == ["anchor", "serf"]
    # A catalog that really changes is recorded.
    changed = dict(CATALOG_V2, effectiveDate="2026-01-01T00:00:00Z")
    (base / "catalog.json").write_text(json.dumps(changed))
    assert handle("member-update", b"node1\t192.168.100.51\t\t\n").returncode == 0
    with sqlite3.connect(base / "membership.db") as c:
        assert c.execute("SELECT count(*) FROM event WHERE source = 'catalog'").fetchone() == \
            (1,)
    assert "hash chain intact" in ok(membership, "verify", "--base-dir", str(base))


def test_an_anchor_made_before_0005_is_recorded_once_and_then_held_to_it(membership,
                                                                       tmp_path):
    """A store compacted by the previous release has an anchor with no record in its log:
    verify says so; the upgrade step (history.setup's, through retention.cover) records it
    once, trusted as it stands; from then on verify holds the anchor to that record."""
    from membership_log.history import retention
    from membership_log.stores.node import NodeStore

    base = tmp_path / "n"
    ok(membership, "import", "--base-dir", str(base),
       str(write_log(tmp_path / "n.jsonl", ["member-failed", "member-join"])))
    ok(membership, "compact", "--base-dir", str(base), "--before", "@4", "--force")
    db = base / "membership.db"
    with sqlite3.connect(db) as c:  # what 0004 left: no record, no catalog digest
        c.execute("DROP TRIGGER event_no_delete")
        c.execute("DELETE FROM event WHERE source = 'anchor'")
        c.execute("UPDATE anchor SET catalog_sha256 = NULL")
    r = cli(membership, "verify", "--base-dir", str(base))
    assert r.returncode == 1 and b"is not recorded in the log" in r.stdout
    with NodeStore(str(db)) as st:
        assert retention.cover(st) == 3
        assert retention.cover(st) is None, "recorded once"
        # Its catalog's bytes were compacted away before 0005 kept their digest: unknown.
        assert st.anchor("").catalog_sha256 is None
    ok(membership, "rebuild", "--base-dir", str(base))
    assert "hash chain intact" in ok(membership, "verify", "--base-dir", str(base))
    with sqlite3.connect(db) as c:
        c.execute("UPDATE anchor SET max_at = max_at + 1")
    assert cli(membership, "verify", "--base-dir", str(base)).returncode == 1
