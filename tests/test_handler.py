"""``membership handle`` through the real launcher, as Serf runs it: every SPEC step, and a
corpus of bad input that must be recorded raw, reported in one line, and never lose data."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from samples import NODES

from membership_log.core.raw import decode_env
from membership_log.version import SCHEMA_REVISION

N0, N1, N2 = NODES
FAILED_NODE1 = b"node1\t192.168.100.51\t\t\n"


def test_seed_quick_reconnect_updates_the_live_file(handle):
    r = handle("member-failed.", b"node1 192.168.100.51")  # the wiki's literal input
    assert r.returncode == 0
    assert list(handle.live()) == [N0, N2]
    assert handle.live()[N0] == {"serfAddress": "192.168.100.50"}
    assert r.stderr.count(b"\n") == 1 and b"read as 'member-failed'" in r.stderr
    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0
    assert list(handle.live()) == NODES


def test_base_dir_without_store_is_set_up_and_catalog_recorded_first(handle, base):
    assert not (base / "membership.db").exists()
    assert handle("member-failed", FAILED_NODE1).returncode == 0
    rows = handle.rows()
    assert [(seq, source) for seq, source, _, _ in rows] == [(1, "catalog"), (2, "serf")]
    assert rows[0][3] == (base / "catalog.json").read_bytes()


def test_raw_event_is_recorded_byte_for_byte_with_only_serf_variables(handle):
    stdin = b"node1\t192.168.100.51\trole\tb=2,a=1\n"
    extra = {"SERF_SELF_ROLE": "web", "SERF_TAG_DC": "east", "AWS_SECRET_ACCESS_KEY": "hunter2"}
    assert handle("member-join", stdin, extra).returncode == 0
    _, _, env, got = handle.rows()[-1]
    assert got == stdin
    assert decode_env(env) == {"SERF_EVENT": "member-join", "SERF_SELF_NAME": "node0",
                               "SERF_SELF_ROLE": "web", "SERF_TAG_DC": "east"}
    assert b"hunter2" not in (handle.base / "membership.db").read_bytes()


def test_a_changed_catalog_is_recorded_just_before_the_event(handle, base):
    handle("member-join", FAILED_NODE1)
    (base / "catalog.json").write_text('{"version": 1, "zones": ["192.168.100.51:10031/droonga"]}')
    handle("member-failed", FAILED_NODE1)
    handle("member-join", FAILED_NODE1)
    assert [s for _, s, _, _ in handle.rows()] == ["catalog", "serf", "catalog", "serf", "serf"]
    assert handle.live() == {N1: {"serfAddress": "192.168.100.51"}}


def test_live_file_is_rewritten_only_when_its_content_changes(handle, base):
    handle("member-join", FAILED_NODE1)
    inode = (base / "live-nodes.json").stat().st_ino
    handle("member-update", FAILED_NODE1)
    handle("user", b"hello", {"SERF_USER_EVENT": "deploy", "SERF_USER_LTIME": "1"})
    assert (base / "live-nodes.json").stat().st_ino == inode
    handle("member-failed", FAILED_NODE1)
    assert (base / "live-nodes.json").stat().st_ino != inode


def test_membership_live_query_is_answered_on_stdout_and_nothing_on_stderr(handle):
    handle("member-failed", FAILED_NODE1)
    r = handle("query", b"", {"SERF_QUERY_NAME": "membership-live", "SERF_QUERY_LTIME": "3"})
    assert r.returncode == 0 and r.stderr == b""
    assert json.loads(r.stdout) == {"observer": "node0", "seq": 3, "live": [N0, N2]}
    # A bad query is still silent on stderr: its warnings stay in the store.
    r = handle("query.", b"\xff", {"SERF_QUERY_NAME": "other", "SERF_QUERY_LTIME": "x"})
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b""
    with sqlite3.connect(handle.base / "membership.db") as c:
        notes = [m for (m,) in c.execute("SELECT message FROM event_note WHERE seq = 4")]
    assert any("UTF-8" in n for n in notes) and any("not a number" in n for n in notes)


def test_a_live_set_over_1024_bytes_is_answered_by_count_and_hash(handle, base):
    zones = [f"10.0.{i // 250}.{i % 250}:10031/droonga" for i in range(100)]
    (base / "catalog.json").write_text(json.dumps({"version": 1, "zones": zones}))
    r = handle("query", b"", {"SERF_QUERY_NAME": "membership-live", "SERF_QUERY_LTIME": "1"})
    answer = json.loads(r.stdout)
    assert len(r.stdout) <= 1024
    import hashlib
    live_bytes = (base / "live-nodes.json").read_bytes()
    assert answer["live_count"] == 100
    assert answer["live_sha256"] == hashlib.sha256(live_bytes).hexdigest()


def test_operator_down_and_up_events_and_queries(handle):
    handle("member-join", FAILED_NODE1)
    handle("user", b"node1\n", {"SERF_USER_EVENT": "membership-down", "SERF_USER_LTIME": "5"})
    assert list(handle.live()) == [N0, N2]
    handle("member-join", FAILED_NODE1)
    assert list(handle.live()) == [N0, N2], "a Serf join does not clear an operator mark"
    handle("query", N1.encode(), {"SERF_QUERY_NAME": "membership-up", "SERF_QUERY_LTIME": "6"})
    assert list(handle.live()) == NODES


CORPUS = {
    "invalid utf-8": ("member-join", b"node1\xff\xfe\t192.168.100.51\t\t\n", {}),
    "nul bytes": ("member-failed", b"no\0de1\t192.168.100.51\0\t\t\n", {}),
    "1 MB stdin": ("member-failed", b"x" * 1_000_000, {}),
    "empty stdin": ("member-failed", b"", {}),
    "unknown SERF_EVENT": ("member-explode", FAILED_NODE1, {}),
    "missing SERF_EVENT": (None, FAILED_NODE1, {}),
    "malformed member lines": ("member-failed", b"a\tb\tc\td\te\n\t\t\n", {}),
    "ltime not a number": ("user", b"node1", {"SERF_USER_EVENT": "membership-down",
                                              "SERF_USER_LTIME": "ten"}),
    "huge user payload": ("user", os.urandom(200_000), {"SERF_USER_EVENT": "blob"}),
    "10 MB stdin": ("member-join", os.urandom(10_000_000), {}),
    "100,000 member lines": ("member-failed", b"".join(
        f"m{i}\t10.{i // 65536}.{i // 256 % 256}.{i % 256}\t\tk=v\n".encode()
        for i in range(100_000)), {}),
    "names with escaped tabs and newlines": (
        "member-join", b"we\\tird\\nname\t10.0.0.1\t\t\nplain space name 10.0.0.2\n", {}),
    "stray punctuation": ("member-leave!.", b"nobody\t10.0.0.3\t\t\n", {}),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input_is_recorded_reported_and_harmless(handle, case):
    event, stdin, extra = CORPUS[case]
    assert handle("member-join", b"node2\t192.168.100.52\t\t\n").returncode == 0
    before = handle.rows()
    live_before = handle.live()
    r = handle(event, stdin, extra)
    assert r.returncode == 0, r.stderr
    rows = handle.rows()
    assert rows[: len(before)] == before, "nothing recorded earlier may change"
    assert rows[-1][3] == stdin, "the raw stdin is kept byte for byte"
    assert rows[-1][0] == before[-1][0] + 1
    assert handle.live() == live_before
    assert r.stderr.count(b"\n") == 1 and r.stderr.startswith(b"membership: event ")


def test_unknown_option_is_a_one_line_error(handle):
    r = handle("member-join", FAILED_NODE1, args=["--base-dir", str(handle.base), "--bogus"])
    assert r.returncode == 2
    assert r.stderr == b"membership: handle: unknown option '--bogus' (accepted: --base-dir, " \
                       b"--db, --catalog, --live-file, --live-format, --store-group)\n"


def test_options_by_environment_and_with_equals(handle, base, tmp_path):
    live = tmp_path / "elsewhere.json"
    r = handle("member-failed", FAILED_NODE1, {"MEMBERSHIP_BASE_DIR": str(base)},
               args=[f"--live-file={live}"])
    assert r.returncode == 0
    assert list(json.loads(live.read_bytes())) == [N0, N2]


def test_unwritable_store_spools_and_the_next_run_takes_the_spool_in(handle, base):
    handle("member-join", FAILED_NODE1)
    db = base / "membership.db"
    with sqlite3.connect(db) as c:  # an older/other schema: handler must not write into it
        c.execute("UPDATE alembic_version SET version_num = '0000'")
    r = handle("member-failed", FAILED_NODE1)
    assert r.returncode == 0
    assert b"spooled" in r.stderr and b"membership db upgrade" in r.stderr
    assert len(list((base / "spool").glob("*.event"))) == 1
    with sqlite3.connect(db) as c:
        c.execute("UPDATE alembic_version SET version_num = ?", (SCHEMA_REVISION,))
    r = handle("member-update", FAILED_NODE1)
    assert r.returncode == 0
    assert [s for _, s, _, _ in handle.rows()] == ["catalog", "serf", "serf", "serf"]
    assert decode_env(handle.rows()[2][2])["SERF_EVENT"] == "member-failed"
    assert list((base / "spool").glob("*.event")) == []
    assert list(handle.live()) == [N0, N2]


@pytest.mark.e2e
def test_store_locked_past_the_busy_timeout_spools_and_loses_nothing(handle, base):
    handle("member-join", FAILED_NODE1)
    lock = sqlite3.connect(base / "membership.db", timeout=0)
    lock.execute("BEGIN IMMEDIATE")  # another writer holding the store's write lock
    try:
        r = handle("member-failed", FAILED_NODE1)
    finally:
        lock.rollback()
        lock.close()
    assert r.returncode == 0 and b"spooled" in r.stderr and b"locked" in r.stderr
    assert handle("member-update", FAILED_NODE1).returncode == 0
    assert [s for _, s, _, _ in handle.rows()][-2:] == ["serf", "serf"]
    assert list(handle.live()) == [N0, N2]


#: Every module of ours that a member event loads on the handler's hot path (a store already
#: set up, a catalog recorded). Each costs ~0.1 ms of every event's time whatever it holds
#: (README, "The handler"): one more here is a choice to make, with the benchmark, not a
#: side effect of an import.
HOT_PATH = {
    "membership_log", "membership_log.version", "membership_log.launch",
    "membership_log.handler", "membership_log.settings",
    "membership_log.core", "membership_log.core.catalog", "membership_log.core.clock",
    "membership_log.core.codec", "membership_log.core.errors", "membership_log.core.events",
    "membership_log.core.fold", "membership_log.core.frontier", "membership_log.core.raw",
    "membership_log.core.records",
    "membership_log.core.incidents",  # an event that changes a node's liveness
    "membership_log.history", "membership_log.history.driver", "membership_log.history.publish",
    "membership_log.render", "membership_log.render.livefile",
    "membership_log.stores", "membership_log.stores.files", "membership_log.stores.node",
    "membership_log.stores.protocol", "membership_log.stores.queries",
}


def test_the_hot_path_loads_exactly_the_modules_it_is_known_to(handle, base):
    handle("member-join", b"node1\t192.168.100.51\t\t\n")  # set up; the catalog recorded
    root = os.path.dirname(os.path.dirname(__file__))
    code = ("import sys, gc; from membership_log.launch import main; "
            f"status = main(['handle', '--base-dir', {str(base)!r}]); "
            "print(status, gc.isenabled(), ' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] == 'membership_log')))")
    env = {"PYTHONPATH": root, "SERF_EVENT": "member-failed", "SERF_SELF_NAME": "node0"}
    out = subprocess.run([sys.executable, "-S", "-c", code], input=FAILED_NODE1,
                         capture_output=True, check=True, cwd=root, env=env)
    status, collecting, *modules = out.stdout.decode().split()
    assert (status, collecting) == ("0", "True"), out  # in-process, the collector is given back
    assert set(modules) == HOT_PATH, out
    assert json.loads((base / "live-nodes.json").read_text()).keys() == {
        "192.168.100.50:10031/droonga", "192.168.100.52:10031/droonga"}
