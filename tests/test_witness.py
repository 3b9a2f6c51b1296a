"""Witnessed history (SPEC): each log's Merkle tree kept by the append path, heads published
over Serf and recorded by every other node, the fold's alarms, the central store holding
every shipped log to the heads others witnessed, and proofs checked without a store.

Through the real CLI (subprocesses and CliRunner), the real handler, real SQLite and
PostgreSQL, real Serf agents and a real Alertmanager. The attacks are done as root on a
node would: the append-only triggers dropped, the log rewritten (or truncated, or the store
re-created under the same name), every hash recomputed, the triggers restored and the
derived state rebuilt, so that the node's own ``verify`` passes.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Handler, cli, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from test_merkle import Oracle
from typer.testing import CliRunner

from membership_log import settings as msettings
from membership_log.cli import app
from membership_log.core import anchors, events, fold, merkle, witness
from membership_log.core.codec import decode_anchor_state
from membership_log.core.raw import GENESIS, RawEvent, chain_hash, decode_env, encode_env
from membership_log.demo.localcluster import wait_until
from membership_log.demo.synthetic import make_store, member_events
from membership_log.history import setup as hsetup
from membership_log.stores import setup as store_setup
from membership_log.stores.node import NODE, NodeStore
from membership_log.stores.protocol import Anchor

runner = CliRunner()
START = 1_700_000_000_000_000


def head_of(base: Path) -> dict:
    return json.loads(invoke("head", "--base-dir", base, "--json"))


def exported(base: Path) -> list[dict]:
    return [json.loads(x) for x in invoke("export", "--base-dir", base).splitlines()]


def leaves_of(lines: list[dict]) -> list[bytes]:
    """The RFC 6962 entries of a log: its event hashes, in seq order."""
    return [bytes.fromhex(e["hash"]) for e in lines]


# -- the pure parts: the head's payload and the fold's two checks ------------------------------


def test_the_head_payload_round_trips_and_nothing_else_parses():
    root = bytes(range(32))
    text = witness.head_payload("node 1", 42, root)
    assert text == "node 1 42 " + root.hex()
    assert witness.parse_head(text) == ("node 1", 42, root.hex())
    assert witness.parse_head(f"n 0 {'0' * 64}") == ("n", 0, "0" * 64)
    for bad in (None, "", "node1 42", f"node1 042 {root.hex()}", f"node1 -1 {root.hex()}",
                f"node1 42 {root.hex().upper()}", f"node1 42 {root.hex()[:-1]}",
                f"node1 {2**63} {root.hex()}", f" 42 {root.hex()}", f"node1  42 {root.hex()}",
                f"{'x' * 500} 42 {root.hex()}", f"node1 4２ {root.hex()}"):
        assert witness.parse_head(bad) is None, bad


def _head_event(seq, origin, size, root, ltime=None, payload=None, observer="node0"):
    env = {"SERF_EVENT": "user", "SERF_USER_EVENT": witness.HEAD_EVENT, "SERF_SELF_NAME": observer}
    if ltime is not None:
        env["SERF_USER_LTIME"] = str(ltime)
    text = payload if payload is not None else f"{origin} {size} {root}"
    return events.parse(RawEvent(seq, seq * 1_000_000, observer, "serf", env,
                                 (text + "\n").encode(), b""))


def test_the_fold_flags_a_fork_and_a_log_that_went_back_and_nothing_else():
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    s = fold.State()
    seq = iter(range(1, 100))

    def see(origin, size, root, ltime):
        return s.apply(_head_event(next(seq), origin, size, root, ltime))

    assert see("node1", 10, a, 5) == fold.NOTHING
    assert see("node1", 10, a, 5).redelivery, "a redelivery is a duplicate, not a conflict"
    assert see("node1", 20, b, 9) == fold.NOTHING
    assert see("node1", 15, c, 7) == fold.NOTHING, "an older head arriving late"
    assert see("node2", 3, c, 8) == fold.NOTHING, "another origin's heads are its own"
    fork = see("node1", 20, c, 11)
    assert len(fork.warnings) == 1 and fork.warnings[0].startswith(witness.CONFLICT)
    assert "fork" in fork.warnings[0] and "node1" in fork.warnings[0]
    back = see("node1", 12, a, 12)
    assert "went back from size 20" in back.warnings[0] and "to 12" in back.warnings[0]
    assert s.heads["node1"].conflicts == 2 and s.heads["node2"].conflicts == 0
    # A head with no Lamport time (not from Serf) counts as the newest.
    assert "went back from size 12" in see("node1", 11, b, None).warnings[0]
    assert see("node1", 30, a, 13) == fold.NOTHING, "a larger tree is not checkable here"
    assert s.heads["node1"].latest.size == 30 and len(s.heads["node1"].recent) <= \
        fold.HEAD_MEMORY
    bad = s.apply(_head_event(next(seq), "", 0, "", 14, payload="node1 twelve " + a))
    assert "not '<observer> <size> <root hex>'" in bad.warnings[0]
    # Replay the same events from scratch: the same state (the fold is a function of them).
    again = fold.from_plain(fold.to_plain(s))
    assert again == s and again.heads == s.heads


def test_the_heads_kept_are_bounded():
    s = fold.State()
    for i in range(fold.MAX_HEAD_ORIGINS + 3):
        effect = s.apply(_head_event(i + 1, f"n{i}", 1, "a" * 64, i))
    assert len(s.heads) == fold.MAX_HEAD_ORIGINS
    assert "not folded" in effect.warnings[0]
    for k in range(3 * fold.HEAD_MEMORY):
        s.apply(_head_event(10_000 + k, "n0", k + 2, "b" * 64, 10_000 + k))
    assert len(s.heads["n0"].recent) == fold.HEAD_MEMORY


def _v5(state: fold.State) -> tuple:
    """The plain form version 5 (the release before issue 20) wrote: the catalog without its
    cluster id, no role epoch, heartbeats or heads."""
    plain = fold.to_plain(state)
    cat = plain[3]
    return (5, *plain[1:3], None if cat is None else cat[:2], *plain[4:11])


def _v7(state: fold.State) -> tuple:
    """The plain form version 7 (the release before the heads) wrote: this one's without
    the heads."""
    plain = fold.to_plain(state)
    assert plain[0] == fold.PLAIN_VERSION == 8
    return (7, *plain[1:13])


def test_states_of_version_7_still_load_where_they_cannot_be_refolded():
    """A retention anchor keeps the fold's state in place of the events it dropped:
    from_plain upgrades a version 7 state (no heads: no release before kept any), and so
    does decode_anchor_state, which reads anchors through it (versions 5 and 6: see
    test_droonga11 and test_deploy)."""
    s = fold.State()
    for raw in _raws("node0", 30):
        s.apply(events.parse(raw))
    old = _v7(s)
    up = fold.from_plain(old)
    assert up.heads == {} and fold.to_plain(up)[:13] == (8, *old[1:])
    assert up.nodes == s.nodes and up.members == s.members
    anchor = Anchor(s.seq, bytes(32), 1, s.max_at, f"marshal{marshal.version}/state7",
                    marshal.dumps(old))
    assert decode_anchor_state(anchor, "test").nodes == s.nodes
    with pytest.raises(ValueError):
        fold.from_plain((4, *old[1:]))


# -- the tree the append paths keep ------------------------------------------------------------


def _raws(observer: str, n: int, start: int = START, seed: int = 1) -> list[RawEvent]:
    prev, out = GENESIS, []
    for seq, (at, obs, src, env, stdin) in enumerate(member_events(observer, n, start, seed=seed),
                                                      1):
        prev = chain_hash(prev, seq, at, obs, src, env, stdin)
        out.append(RawEvent(seq, at, obs, src, decode_env(env), stdin, prev))
    return out


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 40), min_size=1, max_size=12))
def test_the_kept_frontier_is_the_tree_from_scratch_after_every_append(tmp_path_factory,
                                                                       batches):
    """Appends through the real node store, in batches as the handler (one event, or a
    catalog and spooled events with it) and import do: after each, the kept frontier is the
    frontier of the whole log built from scratch, and its root RFC 6962's."""
    base = tmp_path_factory.mktemp("tree")
    s = msettings.resolve(str(base))
    hsetup.init(s, record_catalog=False)
    items = iter(member_events("node0", sum(batches), START))
    store = NodeStore(s.sqlite_path)
    try:
        hashes: list[bytes] = []
        for n in batches:
            with store.write():
                rows = store.append_raws([next(items) for _ in range(n)])
            hashes += [r.hash for r in rows]
            size, blob = store.tree(NODE)
            assert size == len(hashes) == store.head_seq(NODE)
            leaves = [merkle.leaf_hash(h) for h in hashes]
            assert blob == merkle.encode(merkle.extend((), 0, leaves), size)
            kept_size, front = merkle.decode(blob)
            assert merkle.root(front, kept_size) == Oracle(hashes).mth(0, size)
    finally:
        store.close()


def test_the_handler_keeps_the_tree_and_ship_keeps_the_same_one_centrally(handle, base,
                                                                          tmp_path):
    central = f"sqlite:///{tmp_path / 'central.db'}"
    invoke("db", "upgrade", "--role", "central", "--db", central)
    for i, (kind, who) in enumerate([("member-join", 1), ("member-failed", 2),
                                     ("member-join", 2), ("member-leave", 1)]):
        assert handle(kind, f"node{who}\t192.168.100.{50 + who}\t\t\n".encode()).returncode == 0
        lines = exported(base)
        head = head_of(base)
        assert head == {"observer": "node0", "size": len(lines),
                        "root": Oracle(leaves_of(lines)).mth(0, len(lines)).hex()}
        if i % 2:
            invoke("ship", "--base-dir", base, "--to", central)
            assert json.loads(invoke("head", "--db", central, "--observer", "node0",
                                     "--json")) == head
    out = invoke("verify", "--db", central)
    assert f"ok: node0: Merkle tree of {head['size']} events" in out
    assert "head works on one node's log" in invoke("head", "--db", central, code=1)
    out = invoke("head", "--db", central, "--observer", "node0", "--publish", code=1)
    assert "sends a node's own head" in out


def test_verify_holds_the_kept_frontier_to_the_log_and_rebuild_recomputes_it(handle, base):
    for kind in ("member-join", "member-failed", "member-join"):
        handle(kind, b"node1\t192.168.100.51\t\t\n")
    assert "Merkle tree of 4 events" in invoke("verify", "--base-dir", base)
    with sqlite3.connect(base / "membership.db") as c:
        (blob,) = c.execute("SELECT frontier FROM merkle_head").fetchone()
        c.execute("UPDATE merkle_head SET frontier = ?", (blob[:8] + bytes(len(blob) - 8),))
    out = invoke("verify", "--base-dir", base, code=1)
    r = runner.invoke(app, ["verify", "--base-dir", str(base)])
    assert "FAILED: the kept Merkle frontier (size 4) is not the log's" in r.stdout, out
    assert "(run: membership rebuild)" in r.stdout
    invoke("rebuild", "--base-dir", base)
    assert "Merkle tree of 4 events" in invoke("verify", "--base-dir", base)
    # The handler, finding the kept frontier stale (a size behind), computes it from the log.
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("DELETE FROM merkle_head")
    handle("member-leave", b"node1\t192.168.100.51\t\t\n")
    assert head_of(base)["root"] == Oracle(leaves_of(exported(base))).mth(0, 5).hex()
    assert "Merkle tree of 5 events" in invoke("verify", "--base-dir", base)


def test_the_handler_keeps_the_tree_without_loading_the_proofs(base):
    """Its hot path loads core/frontier (the hashes and the frontier), not core/merkle's
    proofs, nor core/witness (only a head event needs it), nor anything heavy."""
    root = os.path.dirname(os.path.dirname(__file__))
    code = ("import sys; from membership_log.handler import main; "
            f"status = main(['--base-dir', {str(base)!r}]); "
            "print(status, sorted(m for m in ('membership_log.core.merkle', "
            "'membership_log.core.proofs', 'membership_log.core.frontier', "
            "'membership_log.core.witness', 'json', 're', 'typing', 'hashlib', 'datetime') "
            "if m in sys.modules))")
    invoke("init", "--base-dir", base)  # the set-up (Alembic) is not the hot path
    env = {"PYTHONPATH": root, "SERF_EVENT": "member-join", "SERF_SELF_NAME": "node0"}
    out = subprocess.run([sys.executable, "-S", "-c", code], input=b"node1\t192.168.100.51\n",
                         capture_output=True, text=False, check=True, cwd=root, env=env)
    assert out.stdout.decode().split("\n")[-2] == "0 ['membership_log.core.frontier']", out
    with sqlite3.connect(base / "membership.db") as c:
        assert c.execute("SELECT size FROM merkle_head").fetchone() == (2,)


# -- an upgrade of a store made by 0005 ----------------------------------------------------------


def _store_at_0005(db: Path) -> None:
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        from alembic import command

        command.upgrade(store_setup._alembic_config(conn), "0005")
    engine.dispose()


def _insert(db: Path, raws: list[RawEvent]) -> None:
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO event VALUES (?, ?, ?, ?, ?, ?, ?)",
                      [(r.seq, r.received_us, r.observer, r.source, encode_env(r.env), r.stdin,
                        r.hash) for r in raws])


def test_an_upgrade_of_a_0005_store_computes_the_tree_of_its_whole_log(base):
    db = base / "membership.db"
    _store_at_0005(db)
    raws = _raws("node0", 300)
    _insert(db, raws)
    assert "0005 -> 0006" in invoke("db", "upgrade", "--base-dir", base)
    hashes = [r.hash for r in raws]
    with sqlite3.connect(db) as c:
        size, blob = c.execute("SELECT size, frontier FROM merkle_head").fetchone()
    assert size == 300, "computed by the upgrade, not left to the next append"
    assert merkle.decode(blob) == (300, merkle.extend((), 0, [merkle.leaf_hash(h)
                                                               for h in hashes]))
    assert head_of(base)["root"] == Oracle(hashes).mth(0, 300).hex()
    assert "ok: Merkle tree of 300 events" in invoke("verify", "--base-dir", base)


def test_an_upgrade_of_a_0005_central_store_computes_the_tree_of_every_log(tmp_path):
    db = tmp_path / "central.db"
    _store_at_0005(db)
    logs = {name: _raws(name, 40 + 7 * i, seed=i) for i, name in enumerate(("n0", "n1"))}
    with sqlite3.connect(db) as c:
        c.execute("UPDATE store_info SET value = 'central' WHERE key = 'role'")
        for name, raws in logs.items():
            c.executemany("INSERT INTO cluster_event VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          [(name, r.seq, r.received_us, r.observer, r.source,
                            encode_env(r.env), r.stdin, r.hash) for r in raws])
    url = f"sqlite:///{db}"
    assert "0005 -> 0006" in invoke("db", "upgrade", "--db", url)
    with sqlite3.connect(db) as c:
        kept = dict(c.execute("SELECT origin, size FROM merkle_head").fetchall())
    assert kept == {name: len(raws) for name, raws in logs.items()}
    for name, raws in logs.items():
        head = json.loads(invoke("head", "--db", url, "--observer", name, "--json"))
        assert head["root"] == Oracle([r.hash for r in raws]).mth(0, len(raws)).hex()
    out = invoke("verify", "--db", url)
    assert "ok: n0: Merkle tree of 40 events" in out and "ok: n1: Merkle tree of 47" in out


def test_a_0005_store_compacted_before_it_kept_a_tree_stays_usable(base, handle):
    """Its first events are gone, so its tree (from event 1) cannot be computed: head and
    prove say so in one line; the anchor's version 5 state is read through from_plain's
    upgrade; verify passes and says why the tree is not checked; recording goes on."""
    db = base / "membership.db"
    _store_at_0005(db)
    raws = _raws("node0", 30)
    _insert(db, raws)
    state = fold.State()
    for raw in raws[:20]:
        state.apply(events.parse(raw))
    old = Anchor(20, raws[19].hash, raws[19].received_us, state.max_at,
                 f"marshal{marshal.version}/state5", marshal.dumps(_v5(state)))
    record = anchors.encode(old)
    assert b"frontier" not in record, "the record of an anchor made before 0006"
    at = raws[-1].received_us + 1
    h31 = chain_hash(raws[-1].hash, 31, at, "", "anchor", b"", record)
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO anchor VALUES ('', ?, ?, ?, ?, ?, ?, NULL)", old[:6])
        c.execute("INSERT INTO event VALUES (31, ?, '', 'anchor', ?, ?, ?)",
                  (at, b"", record, h31))
        c.execute("DELETE FROM event WHERE seq <= 20")
    invoke("db", "upgrade", "--base-dir", base)
    out = invoke("verify", "--base-dir", base)
    assert "hash chain intact from the retention anchor at event 20" in out
    assert "were compacted before the log kept a Merkle tree" in out
    msg = invoke("head", "--base-dir", base, code=1)
    assert msg.startswith("membership: events 1..20 of this log were compacted before it kept "
                          "a Merkle tree") and msg.count("\n") == 1
    assert "compacted before it kept" in invoke("prove", "--base-dir", base, "--seq", 25,
                                                code=1)
    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0
    invoke("compact", "--base-dir", base, "--before", "@25", "--force")
    assert "compacted before the log kept" in invoke("verify", "--base-dir", base)


# -- proofs ------------------------------------------------------------------------------------


def _log(base: Path, n: int, observer: str = "node0", start: int = START) -> list[dict]:
    make_store(str(base), observer, n, start)
    return exported(base)


def _check(doc: str, root: str | None = None, code: int = 0) -> str:
    """``membership check-proof -`` of a proof document (held to ``root``, if given)."""
    r = runner.invoke(app, ["check-proof", "-", *(["--root", root] if root else [])],
                      input=doc)
    assert r.exit_code == code, (r.stdout, r.stderr)
    return r.stdout if code == 0 else r.stderr


def test_prove_and_check_proof_over_every_event_and_size(tmp_path, membership):
    base = tmp_path / "n"
    lines = _log(base, 21)
    oracle = Oracle(leaves_of(lines))
    n = len(lines)
    for seq in range(1, n + 1):
        for size in sorted({seq, (seq + n) // 2, n}):
            doc = invoke("prove", "--base-dir", base, "--seq", seq, "--size", size)
            proof = json.loads(doc)
            assert list(proof) == ["origin", "seq", "size", "root", "event", "prev", "path"]
            assert proof["event"] == lines[seq - 1] and proof["origin"] == "node0"
            assert proof["root"] == oracle.mth(0, size).hex()
            assert _check(doc, oracle.mth(0, size).hex()).startswith(f"ok: event {seq} is in")
    doc = json.loads(invoke("prove", "--base-dir", base, "--seq", 5))
    assert doc["size"] == n, "no head witnessed by another node: the head"
    for m in (0, 1, 7, 16, n):
        con = invoke("prove", "--base-dir", base, "--from", m, "--to", n)
        assert json.loads(con)["root_from"] == oracle.mth(0, m).hex()
        assert _check(con, oracle.mth(0, n).hex()).startswith(f"ok: the log of 'node0' at "
                                                             f"size {m} is a prefix")
    # Changed content, a root not the witnessed one: refused, one line, exit 1.
    bad = json.loads(invoke("prove", "--base-dir", base, "--seq", 9))
    bad["event"]["received"] = lines[9]["received"]
    assert "content and prev do not hash" in _check(json.dumps(bad), code=1)
    why = _check(invoke("prove", "--base-dir", base, "--seq", 9), oracle.mth(0, n - 1).hex(),
                 code=1)
    assert why.startswith("membership: the proof does not hold: the proof is for root")
    # The real process, from a directory with no store at all: the file is all it needs.
    proof = tmp_path / "e9.proof"
    proof.write_text(invoke("prove", "--base-dir", base, "--seq", 9))
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli(membership, "check-proof", str(proof), "--root", oracle.mth(0, n).hex(), cwd=empty)
    assert r.returncode == 0 and r.stdout.startswith(b"ok: event 9 is in the log of 'node0'")
    assert os.listdir(empty) == []
    r = cli(membership, "check-proof", str(tmp_path / "missing"), cwd=empty)
    assert r.returncode == 1 and r.stderr.startswith(b"membership: cannot read")


@pytest.mark.parametrize("args,code,text", [
    ((), 2, "give --seq N"),
    (("--seq", 3, "--from", 1), 2, "not both"),
    (("--seq", 3, "--to", 5), 2, "--to goes with --from"),
    (("--from", 1, "--size", 5), 2, "--size goes with --seq"),
    (("--seq", 5, "--size", 3), 2, "does not hold event 5"),
    (("--from", 6, "--to", 5), 2, "after --to"),
    (("--seq", 0), 2, ""),
    (("--seq", 99), 1, "there is no event 99"),
    (("--seq", 3, "--size", 99), 1, "--size 99: the log's last event is"),
    (("--seq", 3, "--observer", "node7"), 1, "holds the log of 'node0' only"),
])
def test_prove_usage_errors_exit_2_and_errors_1_in_one_line(tmp_path, args, code, text):
    base = tmp_path / "n"
    _log(base, 8)
    r = runner.invoke(app, ["prove", "--base-dir", str(base), *map(str, args)])
    assert r.exit_code == code and text in r.stderr, r.stderr
    if code == 1:
        assert r.stderr.startswith("membership: ") and r.stderr.count("\n") == 1


def test_check_proof_refuses_a_root_that_is_not_a_hash(tmp_path):
    r = runner.invoke(app, ["check-proof", "-", "--root", "abc"], input="{}")
    assert r.exit_code == 2 and "64 hex digits" in r.stderr
    r = runner.invoke(app, ["check-proof", "-"], input="not json")
    assert r.exit_code == 1 and r.stderr.startswith("membership: the proof does not hold: ")


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 40), st.data())
def test_compaction_keeps_every_later_proof_valid(tmp_path_factory, anchor_at, data):
    """After ``membership compact --force``, every kept event is provable in every tree of
    a size from the anchor's on, each consistency proof between such sizes holds, and the
    proofs check against the roots the whole log had (computed here from all of it, before
    it was compacted). Nothing before the anchor is claimed."""
    base = tmp_path_factory.mktemp("c")
    lines = _log(base, 45)
    oracle = Oracle(leaves_of(lines))
    invoke("compact", "--base-dir", base, "--before", f"@{anchor_at + 1}", "--force")
    assert "hash chain intact from the retention anchor at event " \
        f"{anchor_at}" in invoke("verify", "--base-dir", base)
    after = exported(base)
    assert after[0]["seq"] == anchor_at + 1 and after[-1]["source"] == "anchor"
    whole = leaves_of(lines) + leaves_of(after[len(lines) - anchor_at:])
    oracle = Oracle(whole)
    n = len(whole)
    assert head_of(base)["root"] == oracle.mth(0, n).hex()
    seqs = data.draw(st.lists(st.integers(anchor_at + 1, n), min_size=1, max_size=4))
    for seq in seqs:
        size = data.draw(st.integers(seq, n))
        doc = invoke("prove", "--base-dir", base, "--seq", seq, "--size", size)
        assert _check(doc, oracle.mth(0, size).hex()).startswith(f"ok: event {seq} is in")
    m = data.draw(st.integers(anchor_at, n))
    con = invoke("prove", "--base-dir", base, "--from", m)
    assert _check(con, oracle.mth(0, n).hex()).startswith("ok: the log of")
    if anchor_at > 1:
        assert "was compacted away" in invoke("prove", "--base-dir", base, "--seq",
                                              anchor_at, code=1)


# -- three nodes, their heads, and a central store ---------------------------------------------


class Node:
    """One node's base dir: a synthetic history (through import), then its own handler."""

    def __init__(self, membership: str, root: Path, name: str, n: int, seed: int = 0) -> None:
        self.name, self.base = name, root / name
        make_store(str(self.base), name, n, START + seed * 10**9)
        self.run = Handler(membership, self.base)

    def event(self, kind: str = "member-update", member: int = 2) -> None:
        r = self.run(kind, f"node{member}\t192.168.0.{member + 1}\t\t\n".encode(),
                     observer=self.name)
        assert r.returncode == 0, r.stderr

    def head(self) -> dict:
        return head_of(self.base)

    def record(self, head: dict, ltime: int) -> bytes:
        """What this node's handler does when Serf delivers a published head."""
        payload = witness.head_payload(head["observer"], head["size"],
                                       bytes.fromhex(head["root"]))
        r = self.run("user", (payload + "\n").encode(),
                     {"SERF_USER_EVENT": witness.HEAD_EVENT, "SERF_USER_LTIME": str(ltime)},
                     observer=self.name)
        assert r.returncode == 0, r.stderr
        return r.stderr

    def ship(self, url: str, code: int = 0) -> str:
        return invoke("ship", "--base-dir", self.base, "--to", url, code=code)

    def verify(self) -> str:
        return invoke("verify", "--base-dir", self.base)

    @property
    def db(self) -> Path:
        return self.base / "membership.db"


class Cluster:
    def __init__(self, membership: str, root: Path, n: int = 30) -> None:
        self.nodes = [Node(membership, root, f"node{i}", n, seed=i) for i in range(3)]
        self.ltime = 0

    def publish(self, only=None) -> dict[str, dict]:
        """A round of heads: each node's (or ``only``'s), recorded by every node (Serf
        delivers a user event to its sender too)."""
        heads = {}
        for x in self.nodes if only is None else [only]:
            heads[x.name] = x.head()
            self.ltime += 1
            for y in self.nodes:
                y.record(heads[x.name], self.ltime)
        return heads


def _central(tmp_path: Path, name: str = "central.db") -> str:
    url = f"sqlite:///{tmp_path / name}"
    invoke("db", "upgrade", "--role", "central", "--db", url)
    return url


def _triggers(c: sqlite3.Connection) -> list[tuple[str, str]]:
    found = c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND "
                      "tbl_name = 'event'").fetchall()
    assert {n for n, _ in found} >= {"event_no_update", "event_no_delete"}
    for name, _ in found:
        c.execute(f"DROP TRIGGER {name}")
    return found


def rewrite(db: Path, seq: int, change) -> None:
    """As root on the node: the append-only triggers dropped, event ``seq`` changed, every
    hash from there on recomputed, the triggers restored."""
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("BEGIN")
    triggers = _triggers(c)
    prev = c.execute("SELECT hash FROM event WHERE seq = ?", (seq - 1,)).fetchone()[0]
    for s, at, obs, src, env, stdin in c.execute(
            "SELECT seq, received_us, observer, source, env, stdin FROM event WHERE seq >= ? "
            "ORDER BY seq", (seq,)).fetchall():
        if s == seq:
            env, stdin = change(env, stdin)
        prev = chain_hash(prev, s, at, obs, src, env, stdin)
        c.execute("UPDATE event SET env = ?, stdin = ?, hash = ? WHERE seq = ?",
                  (env, stdin, prev, s))
    for _, sql in triggers:
        c.execute(sql)
    c.execute("COMMIT")
    c.close()


def truncate(db: Path, keep: int) -> None:
    """As root: the triggers dropped, every event after ``keep`` deleted, the triggers
    restored."""
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("BEGIN")
    triggers = _triggers(c)
    for table in ("event_note", "spool_intake", "event"):
        c.execute(f"DELETE FROM {table} WHERE seq > ?", (keep,))
    for _, sql in triggers:
        c.execute(sql)
    c.execute("COMMIT")
    c.close()


def _failure_into_update(env: bytes, stdin: bytes) -> tuple[bytes, bytes]:
    variables = dict(decode_env(env))
    assert variables["SERF_EVENT"] == "member-failed"
    variables["SERF_EVENT"] = "member-update"
    return encode_env(variables), stdin


def _incidents(node: Node) -> int:
    doc = json.loads(invoke("audit", "--base-dir", node.base, "--json"))
    return sum(len(n["incidents"]) for n in doc["nodes"].values())


def _conflicts(base: Path) -> dict[str, float]:
    """membership_witness_conflicts_total of a node's store, by origin."""
    out = {}
    for line in invoke("metrics", "--base-dir", base).splitlines():
        if line.startswith("membership_witness_conflicts_total{"):
            origin = line.split('origin="', 1)[1].split('"', 1)[0]
            out[origin] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_rewritten_log_passes_its_own_verify_and_is_named_centrally(membership, tmp_path):
    c = Cluster(membership, tmp_path)
    node0, node1, node2 = c.nodes
    first = c.publish()
    node1.event("member-join", 2)
    node1.event("member-failed", 2)  # the incident the attacker will rewrite away
    node1.event("member-join", 2)
    for n in c.nodes:
        n.event()
    second = c.publish()
    w1, w2 = first["node1"]["size"], second["node1"]["size"]
    failed = w1 + 2 + 2  # after its record of its own head and node2's, and the join
    assert exported(node1.base)[failed - 1]["env"]["SERF_EVENT"] == "member-failed"
    before = _incidents(node1)

    rewrite(node1.db, failed, _failure_into_update)
    invoke("rebuild", "--base-dir", node1.base)  # the derived state, and the tree, follow
    assert _incidents(node1) == before - 1, "the incident is gone from node1's own audit"
    assert "FAILED" not in node1.verify(), "node1's own verify passes"
    third = c.publish(only=node1)
    w3 = third["node1"]["size"]
    assert _conflicts(node0.base)["node1"] == 0, "a larger tree is not checkable by a fold"

    # Shipped before the witnesses: central verify names it, the events and the witnesses.
    central = _central(tmp_path)
    for n in (node1, node0, node2):
        n.ship(central)
    r = runner.invoke(app, ["verify", "--db", central])
    assert r.exit_code == 1
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("FAILED: node1:")]
    assert "witnessed by node0, node2" in line and f"at size {w2}" in line, line
    assert f"events {w1 + 1}..{w2} are not the ones they saw" in line, line  # (w2 > w1 + 1)
    assert f"ok: node1: agrees with 2 head(s) witnessed by node0, node2 (sizes {w1}..{w3})" \
        in r.stdout, "the head before the rewrite, and the one published since"
    assert "FAILED: node0" not in r.stdout and "FAILED: node2" not in r.stdout
    assert r.stderr.startswith(f"membership: verify failed: first bad event {w1 + 1}")

    # The witnesses shipped first: node1's events are refused, in one line.
    central2 = _central(tmp_path, "central2.db")
    node0.ship(central2)
    node2.ship(central2)
    msg = node1.ship(central2, code=1)
    assert msg.startswith("membership: refusing to ship events 1..") and msg.count("\n") == 1
    assert f"of node1: its tree at size {w2}" in msg and "node0, node2 witnessed" in msg, msg
    assert "ok: 2 node log(s)" in invoke("verify", "--db", central2)


def test_a_truncated_log_is_an_alarm_on_every_witness_and_named_centrally(
        membership, tmp_path, alertmanager):
    c = Cluster(membership, tmp_path)
    node0, node1, node2 = c.nodes
    first = c.publish()
    for _ in range(3):
        node1.event()
    second = c.publish()
    w1, w2 = first["node1"]["size"], second["node1"]["size"]

    truncate(node1.db, w1 + 4)  # the last events, the second round's heads among them, gone
    invoke("rebuild", "--base-dir", node1.base)
    assert "FAILED" not in node1.verify(), "node1's own verify passes"
    said = c.publish(only=node1)["node1"]
    assert said["size"] == w1 + 4 < w2
    with sqlite3.connect(node0.db) as db:
        (note,) = db.execute("SELECT message FROM event_note WHERE seq = (SELECT max(seq) "
                             "FROM event)").fetchone()
    assert note.startswith(f"witness conflict: 'node1' published a head that contradicts an "
                           f"earlier one: the log went back from size {w2}")
    assert _conflicts(node0.base) == {"node0": 0, "node1": 1, "node2": 0}
    assert _conflicts(node2.base)["node1"] == 1
    out = invoke("alerts", "--base-dir", node0.base, "--to", alertmanager.url)
    assert "node1: witness conflict recorded by node0" in out
    assert "1 witness conflict(s)" in out
    fired = [a for a in alertmanager.alerts()
             if a["labels"]["alertname"] == "MembershipWitnessConflict"]
    assert len(fired) == 1 and fired[0]["labels"]["origin"] == "node1"
    assert fired[0]["labels"]["observer"] == "node0" and fired[0]["status"]["state"] == "active"
    assert "witness conflict" not in invoke("alerts", "--base-dir", node0.base, "--to",
                                            alertmanager.url), "sent once"

    for _ in range(w2 - w1):
        node1.event()  # the log grows past the witnessed size again
    central = _central(tmp_path)
    for n in (node1, node0, node2):
        n.ship(central)
    r = runner.invoke(app, ["verify", "--db", central])
    assert r.exit_code == 1
    failed = [x for x in r.stdout.splitlines() if x.startswith("FAILED: node1:")]
    # What differs: the events after the head node1 published since it was truncated
    # (which its log still agrees with), up to the head it had published before.
    assert any(f"at size {w2} node0, node2 recorded root" in x and
               f"events {said['size'] + 1}..{w2} are not" in x for x in failed), failed
    assert sorted(x.split(" witnessed (event ")[0] for x in failed
                  if "published a head that contradicts an earlier one: the log went back"
                  in x) == ["FAILED: node1: node0", "FAILED: node1: node2"], \
        "the alarms of both witnesses, shipped with their logs"


@pytest.mark.postgres
def test_a_log_recreated_under_the_same_name_is_named_centrally(membership, tmp_path, pg_url):
    c = Cluster(membership, tmp_path)
    node0, node1, node2 = c.nodes
    first = c.publish()
    c.publish()
    w1 = first["node1"]["size"]

    for name in os.listdir(node1.base):
        if name != "catalog.json":
            path = node1.base / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    make_store(str(node1.base), "node1", 10, START + 7 * 10**9)
    assert "FAILED" not in node1.verify(), "a new store verifies"
    anew = c.publish(only=node1)["node1"]["size"]
    assert _conflicts(node0.base)["node1"] == 1 and _conflicts(node2.base)["node1"] == 1
    make_store(str(node1.base), "node1", w1, START + 8 * 10**9)  # grows past the old heads

    invoke("db", "upgrade", "--db", pg_url)
    for n in (node1, node0, node2):
        n.ship(pg_url)
    r = runner.invoke(app, ["verify", "--db", pg_url])
    assert r.exit_code == 1
    line = next(x for x in r.stdout.splitlines() if "contradicts" in x and "head(s)" in x)
    assert line.startswith("FAILED: node1: the log contradicts") and "node0, node2" in line
    # What differs: everything after the head the new log published (which it agrees with)
    # up to the first head the old one had.
    assert f"events {anew + 1}..{w1} are not the ones they saw" in line, line

    central = _central(tmp_path)
    node0.ship(central)
    node2.ship(central)
    msg = node1.ship(central, code=1)
    assert f"of node1: its tree at size {w1}" in msg and "node0, node2 witnessed" in msg


def test_prove_on_the_central_store_defaults_to_the_latest_witnessed_head(membership,
                                                                         tmp_path):
    c = Cluster(membership, tmp_path, n=12)
    node0, node1, node2 = c.nodes
    heads = c.publish()
    node1.event()
    node1.event()
    central = _central(tmp_path)
    node0.ship(central)
    out = invoke("verify", "--db", central)
    assert "note: node1: 1 head(s) witnessed by node0, but its log was never shipped here: " \
        "not checked" in out
    for n in c.nodes:
        n.ship(central)
    w = heads["node1"]["size"]
    doc = json.loads(invoke("prove", "--db", central, "--observer", "node1", "--seq", 3))
    assert doc["size"] == w and doc["root"] == heads["node1"]["root"]
    assert _check(json.dumps(doc), heads["node1"]["root"]).startswith("ok: event 3")
    assert "works on one node's log" in invoke("prove", "--db", central, "--seq", 3, code=1)
    assert "holds no log of" in invoke("prove", "--db", central, "--observer", "nodeX",
                                       "--seq", 3, code=1)
    on_node = json.loads(invoke("prove", "--base-dir", node1.base, "--seq", 3))
    assert on_node["size"] == node1.head()["size"], "a node store holds no other's record"


def test_head_publish_failures_are_one_line(tmp_path, membership, serf):
    base = tmp_path / "n"
    _log(base, 5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
    env["PATH"] = str(tmp_path / "nowhere")
    r = subprocess.run([membership, "head", "--base-dir", str(base), "--publish"],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.startswith(b"membership: serf is not installed (no serf command on PATH")
    assert r.stderr.count(b"\n") == 1
    r = cli(membership, "head", "--base-dir", str(base), "--publish", "--rpc-addr",
            "127.0.0.1:9")
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1
    assert r.stderr.startswith(b"membership: serf event (the agent at 127.0.0.1:9) failed: ")
    r = cli(membership, "head", "--base-dir", str(base), "--rpc-addr", "127.0.0.1:9")
    assert r.returncode == 2 and b"--rpc-addr goes with --publish" in r.stderr


def test_a_user_event_over_serfs_limit_is_refused_before_serf_is_asked(monkeypatch):
    from membership_log.core.witness import USER_EVENT_LIMIT
    from membership_log.ops import serfagent

    monkeypatch.setenv("PATH", "/nowhere")  # had serf been asked: NotInstalled instead
    name = "membership-head"
    with pytest.raises(serfagent.SerfError, match=f"over Serf's limit of {USER_EVENT_LIMIT}"):
        serfagent.send_user_event(name, "x" * (USER_EVENT_LIMIT - len(name) + 1))
    with pytest.raises(serfagent.NotInstalled):
        serfagent.send_user_event(name, "x" * (USER_EVENT_LIMIT - len(name)))


# -- real Serf ---------------------------------------------------------------------------------

FIRST_IP = 181  # 127.0.0.181-183: used by no other test


@pytest.mark.serf
@pytest.mark.postgres
def test_heads_published_over_serf_are_recorded_by_every_node_and_checked_centrally(
        serf, membership, tmp_path, pg_url):
    from serfhelpers import running_cluster

    with running_cluster(tmp_path, FIRST_IP) as cluster:
        agents = cluster.agents

        def recorded(agent) -> dict[str, list[int]]:
            out = invoke("replay", "--base-dir", agent.base_dir, "--json")
            heads: dict[str, list[int]] = {}
            for line in map(json.loads, out.splitlines()):
                if line["name"] == witness.HEAD_EVENT:
                    origin, size, _ = witness.parse_head(line["payload"])
                    heads.setdefault(origin, []).append(size)
            return heads

        published = []
        for _ in range(2):
            # All three at once: -coalesce=false keeps every one (coalescing would keep
            # only the last of the name in its window, on every receiver).
            # The last one finds its agent through Serf's own SERF_RPC_ADDR.
            procs = [subprocess.Popen(
                [membership, "head", "--base-dir", str(a.base_dir), "--publish", "--json",
                 *(["--rpc-addr", a.rpc] if a is not agents[-1] else [])],
                env={**os.environ, **({"SERF_RPC_ADDR": a.rpc} if a is agents[-1] else {})},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in agents]
            for p in procs:
                out, err = p.communicate(timeout=60)
                assert p.returncode == 0, err
                published.append(json.loads(out))
            want = {h["observer"]: h["size"] for h in published[-3:]}
            for a in agents:
                assert wait_until(lambda a=a, want=want: all(
                    size in recorded(a).get(origin, []) for origin, size in want.items()), 45), \
                    (a.name, recorded(a), want)
        for a in agents:
            assert _conflicts(a.base_dir) == {"node0": 0, "node1": 0, "node2": 0}
        sqlite_central = _central(tmp_path)
        invoke("db", "upgrade", "--db", pg_url)
        for url in (sqlite_central, pg_url):
            for a in agents:
                invoke("ship", "--base-dir", a.base_dir, "--to", url)
            out = invoke("verify", "--db", url)
            for a in agents:
                others = ", ".join(b.name for b in agents if b is not a)
                assert f"ok: {a.name}: agrees with 2 head(s) witnessed by {others}" in out, out
                assert f"FAILED: {a.name}" not in out
