"""The store: one schema owner (models + Alembic) on SQLite and real PostgreSQL, the
append-only raw log, the hash chain, and the node store's stdlib SQL naming the same
tables."""

import sqlite3

import pytest
from sqlalchemy import create_engine, inspect, text

from membership_log import settings
from membership_log.core.errors import SchemaMismatch, StoreError
from membership_log.core.raw import GENESIS, chain_hash, encode_env
from membership_log.history import api as history
from membership_log.history import driver as derive
from membership_log.history import setup as hsetup
from membership_log.history.publish import publisher
from membership_log.stores import setup as admin
from membership_log.stores import setup as store
from membership_log.stores.connect import driver_url
from membership_log.stores.node import COLUMNS, NODE, NodeStore
from membership_log.stores.schema import metadata
from membership_log.version import SCHEMA_REVISION


def _check_models_match_migrations(url):
    from alembic import command

    engine = create_engine(driver_url(url))
    with engine.begin() as conn:
        command.check(store._alembic_config(conn))  # raises if models and migrations differ
    engine.dispose()


def test_schema_revision_is_the_migrations_head():
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(store._alembic_config(None)).get_current_head()
    assert head == SCHEMA_REVISION


def test_the_node_stores_sql_names_the_models_columns():
    """The handler's hot path writes through sqlite3; its table knowledge (COLUMNS) must be
    the models' exactly, in order."""
    for table, columns in COLUMNS.items():
        assert tuple(c.name for c in metadata.tables[table].columns) == columns, table


def test_sqlite_upgrade_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert store.upgrade(url) == (None, SCHEMA_REVISION)
    assert store.upgrade(url) == (SCHEMA_REVISION, SCHEMA_REVISION)
    _check_models_match_migrations(url)


@pytest.mark.postgres
def test_postgres_upgrade_matches_models_and_log_is_append_only(pg_url):
    assert store.upgrade(pg_url) == (None, SCHEMA_REVISION)
    _check_models_match_migrations(pg_url)
    engine = create_engine(driver_url(pg_url))
    assert set(inspect(engine).get_table_names()) >= set(metadata.tables)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO event VALUES (1, 0, 'o', 'serf', '', '', '')"))
    for statement in ["UPDATE event SET observer = 'x'", "DELETE FROM event"]:
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    engine.dispose()


def test_sqlite_raw_log_refuses_update_and_delete(tmp_path, base):
    s = settings.resolve(str(base))
    hsetup.init(s)
    with sqlite3.connect(s.sqlite_path) as c:
        for statement in ["UPDATE event SET observer = 'x'", "DELETE FROM event"]:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                c.execute(statement)


def test_init_is_idempotent_and_records_the_catalog_once(base):
    s = settings.resolve(str(base))
    first = hsetup.init(s)
    again = hsetup.init(s)
    assert first["seq"] == again["seq"] == 1
    assert len(first["live"]) == 3
    (base / "catalog.json").write_text('{"version": 1, "zones": ["10.0.0.1:1/t"]}')
    assert hsetup.init(s)["live"] == ["10.0.0.1:1/t"]


def test_store_file_is_created_0600(base):
    s = settings.resolve(str(base))
    hsetup.init(s)
    assert (base / "membership.db").stat().st_mode & 0o777 == 0o600


def test_every_store_file_is_0600(base, tmp_path):
    from typer.testing import CliRunner

    from membership_log.cli import app

    new = tmp_path / "new" / "store.db"
    r = CliRunner().invoke(app, ["db", "upgrade", "--db", str(new)])
    assert r.exit_code == 0, r.output
    assert new.stat().st_mode & 0o777 == 0o600
    central = tmp_path / "central.db"
    r = CliRunner().invoke(app, ["db", "upgrade", "--role", "central", "--db", str(central)])
    assert r.exit_code == 0, r.output
    assert central.stat().st_mode & 0o777 == 0o600
    lock = base / "membership.db.lock"
    hsetup.init(settings.resolve(str(base)))
    assert lock.stat().st_mode & 0o777 == 0o600


def test_node_store_appends_a_gap_free_hash_chain(base):
    s = settings.resolve(str(base))
    hsetup.init(s)
    j = NodeStore(s.sqlite_path)
    with j.write():
        seqs = j.append([(10, "n", "serf", b"SERF_EVENT=member-join", b"a\t1.2.3.4\n"),
                         (11, "n", "serf", b"", b"")])
    assert seqs == [2, 3]
    with j:
        raws = list(j.events(NODE, 0))
    assert [r.seq for r in raws] == [1, 2, 3]
    prev = GENESIS
    for r in raws:
        assert r.hash == chain_hash(prev, r.seq, r.received_us, r.observer, r.source,
                                    encode_env(r.env), r.stdin)
        prev = r.hash
    assert raws[1].env == {"SERF_EVENT": "member-join"}


def test_a_store_at_another_revision_is_refused_with_what_to_do(base):
    s = settings.resolve(str(base))
    hsetup.init(s)
    with sqlite3.connect(s.sqlite_path) as c:
        c.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaMismatch, match="upgrade membership-log"):
        NodeStore(s.sqlite_path)
    with pytest.raises(SchemaMismatch, match="newer than this release"):
        history.open_store(s.db_url)
    with pytest.raises(SchemaMismatch, match="upgrade membership-log"):
        store.upgrade(s.db_url)
    with sqlite3.connect(s.sqlite_path) as c:
        c.execute("UPDATE alembic_version SET version_num = '0002'")
    with pytest.raises(SchemaMismatch, match="run: membership db upgrade"):
        NodeStore(s.sqlite_path)


def test_foreign_and_missing_stores_are_refused(tmp_path):
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a membership-log store"):
        history.open_store(f"sqlite:///{foreign}")
    with pytest.raises(StoreError, match="not a membership-log store"):
        store.upgrade(f"sqlite:///{foreign}")
    with pytest.raises(StoreError, match="no store at"):
        history.open_store(f"sqlite:///{tmp_path / 'absent.db'}")


def test_catch_up_refolds_when_the_snapshot_is_unusable(base):
    s = settings.resolve(str(base))
    hsetup.init(s)
    j = NodeStore(s.sqlite_path)
    with j.write():
        j.append([(10, "n", "serf", b"SERF_EVENT=member-failed", b"node1\t192.168.100.51\t\t\n")])
    state, live, _ = derive.catch_up(j, NODE, publisher(s.live_file))
    with j.write():
        j.conn.execute("UPDATE snapshot SET state = x'00ff', format = 'garbage'")
    (base / "live-nodes.json").unlink()
    again, live2, _ = derive.catch_up(j, NODE, publisher(s.live_file))
    j.close()
    assert again == state and live2 == live
    assert (base / "live-nodes.json").read_bytes() == live
    assert b"192.168.100.51" not in live


def test_a_store_of_the_previous_release_is_upgraded_only_on_request(handle, base):
    """A 0001 store (built by that migration, with events) is never written by a newer
    handler: the event is spooled until `membership db upgrade`, which keeps every row."""
    from alembic import command
    from typer.testing import CliRunner

    from membership_log.cli import app
    from membership_log.core.raw import chain_hash

    db = base / "membership.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        command.upgrade(store._alembic_config(conn), "0001")
    engine.dispose()
    h = chain_hash(GENESIS, 1, 5, "node0", "serf", b"SERF_EVENT=member-failed",
                   b"node1\t192.168.100.51\t\t\n")
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO event VALUES (1, 5, 'node0', 'serf', ?, ?, ?)",
                  (b"SERF_EVENT=member-failed", b"node1\t192.168.100.51\t\t\n", h))
    r = handle("member-join", b"node2\t192.168.100.52\t\t\n")
    assert r.returncode == 0 and b"revision 0001" in r.stderr
    assert b"membership db upgrade" in r.stderr
    out = CliRunner().invoke(app, ["db", "upgrade", "--base-dir", str(base)])
    assert out.exit_code == 0 and f"0001 -> {SCHEMA_REVISION}" in out.output
    assert handle("member-update", b"node2\t192.168.100.52\t\t\n").returncode == 0
    rows = handle.rows()
    assert rows[0][3] == b"node1\t192.168.100.51\t\t\n", "the old rows are kept"
    assert [s for _, s, _, _ in rows] == ["serf", "serf", "catalog", "serf"]
    assert CliRunner().invoke(app, ["verify", "--base-dir", str(base)]).exit_code == 0


def test_append_stores_the_canonical_environment_block_so_verify_agrees(base):
    from typer.testing import CliRunner

    from membership_log.cli import app

    s = settings.resolve(str(base))
    hsetup.init(s)
    j = NodeStore(s.sqlite_path)
    with j.write():  # variables out of order, as a hand-built item might have them
        j.append([(10, "n", "serf", b"SERF_QUERY_NAME=x\0SERF_EVENT=query\0SERF_QUERY_LTIME=1",
                   b"\n")])
    derive.catch_up(j, NODE, publisher(s.live_file))
    j.close()
    with sqlite3.connect(s.sqlite_path) as c:
        (env,) = c.execute("SELECT env FROM event WHERE seq = 2").fetchone()
    assert env == b"SERF_EVENT=query\0SERF_QUERY_LTIME=1\0SERF_QUERY_NAME=x"
    assert CliRunner().invoke(app, ["verify", "--base-dir", str(base)]).exit_code == 0


def test_an_upgrade_brings_every_derived_table_up_to_date(base):
    """A store made before the derived tables existed (revision 0002, events only) reports
    its incidents after `db upgrade`, not 0 incidents and 100% availability (issue 11,
    item 4)."""
    from alembic import command
    from typer.testing import CliRunner

    from membership_log.cli import app
    from membership_log.core.raw import chain_hash, encode_env

    db = base / "membership.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        command.upgrade(store._alembic_config(conn), "0002")
    engine.dispose()
    prev = GENESIS
    rows = []
    for seq, kind in enumerate(["member-join", "member-failed", "member-join"], 1):
        env = encode_env({"SERF_EVENT": kind, "SERF_SELF_NAME": "node0"})
        stdin = b"node1\t192.168.100.51\t\t\n"
        prev = chain_hash(prev, seq, seq * 1_000_000, "node0", "serf", env, stdin)
        rows.append((seq, seq * 1_000_000, "node0", "serf", env, stdin, prev))
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO event VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    out = CliRunner().invoke(app, ["db", "upgrade", "--base-dir", str(base)])
    assert out.exit_code == 0, out.output
    r = CliRunner().invoke(app, ["audit", "--base-dir", str(base), "--json", "--until",
                                 "1970-01-01T00:00:10Z"])
    assert r.exit_code == 0, r.output
    import json

    doc = json.loads(r.output)
    (incident,) = doc["nodes"]["node1"]["incidents"]
    assert (incident["down_seq"], incident["up_seq"]) == (2, 3)
    assert doc["nodes"]["node1"]["availability"] < 1
    assert CliRunner().invoke(app, ["verify", "--base-dir", str(base)]).exit_code == 0


def test_a_set_up_is_atomic_an_interrupted_one_leaves_no_half_store(tmp_path, monkeypatch):
    """The store is built under a temporary name and renamed into place: a set-up that dies
    midway leaves nothing that a later run would take for a store."""
    s = settings.resolve(str(tmp_path / "b"))

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(admin, "upgrade", boom)  # dies midway through the migrations
    with pytest.raises(RuntimeError):
        hsetup.init(s)
    assert not (tmp_path / "b" / "membership.db").exists()
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["membership.db.lock"]
    monkeypatch.undo()
    assert hsetup.init(s)["to"] == SCHEMA_REVISION
