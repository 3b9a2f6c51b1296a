"""Creating, upgrading and opening stores: Alembic from code, and the choice of role.

A store has a role, recorded in it when it is created (``store_info``): a **node** store holds
one node's own log, written by its handler through the stdlib (:mod:`.nodestore`); a
**central** store holds every node's shipped log (:mod:`.centralstore`, SQLAlchemy). Nothing
picks the role from the SQL dialect: :func:`open_store` reads it.

Only the slow paths come here (``init``, ``db upgrade``, the handler's first run in a new base
dir); Alembic and SQLAlchemy are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..core.errors import SchemaMismatch, StoreError
from ..history import driver as derive
from ..settings import Settings, safe_url, sqlite_path_of
from ..version import SCHEMA_REVISION
from . import files
from . import node as nodestore


def migrations_dir() -> str:
    """The Alembic scripts: inside the package when installed, top-level in a checkout."""
    here = Path(__file__).resolve().parent.parent  # the package (membership_log/)
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise StoreError(f"the migrations are missing from {here} (a broken install?)")


def _alembic_config(connection):
    import io

    from alembic.config import Config

    # Alembic's Config binds sys.stdout as a default argument at import time; give it its own
    # stream (the CLI reports results itself) rather than whatever stdout was back then.
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", migrations_dir())
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_alembic_config(None))
            .walk_revisions()}


def driver_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy alone would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_for(url: str):
    """A SQLAlchemy engine; every failure to make one is one line, password masked."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        return create_engine(driver_url(url))
    except NoSuchModuleError:
        scheme = url.split(":", 1)[0]
        raise StoreError(f"{safe_url(url)}: unknown database kind {scheme!r} (use sqlite:/// "
                         f"or postgresql://)") from None
    except ImportError as e:
        raise StoreError(f"{safe_url(url)}: its database driver is not installed "
                         f"({e.name or e})") from None
    except (ArgumentError, SQLAlchemyError, ValueError, TypeError) as e:
        raise StoreError(f"cannot use store URL {safe_url(url)}: "
                         f"{first_line(e, url)}") from None


def first_line(e: BaseException, url: str | None = None) -> str:
    """An exception as one line, with any password from ``url`` masked."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if url:
        line = line.replace(url, safe_url(url))
        start = url.find("://") + 3
        colon, at = url.find(":", start), url.rfind("@")
        if start >= 3 and 0 <= colon < at - 1:
            line = line.replace(url[colon + 1:at], "***")  # the password, however quoted
    return line


def upgrade(url: str, role: str | None = None) -> tuple[str | None, str]:
    """Bring the store at ``url`` to this release's schema. A new store gets ``role``
    (default: ``node`` for SQLite, ``central`` for a database server). Returns (from, to)."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            from alembic.runtime.migration import MigrationContext

            before = MigrationContext.configure(conn).get_current_revision()
            if before == SCHEMA_REVISION:
                return before, before
            if before is not None and before not in _known_revisions():
                raise SchemaMismatch(nodestore.schema_message(safe_url(url), before))
            if before is None and _has_foreign_tables(conn):
                raise StoreError(f"{safe_url(url)} holds tables that are not a membership-log "
                                 f"store; refusing to write into it")
            command.upgrade(_alembic_config(conn), "head")
            if before is None:
                role = role or (nodestore.ROLE_NODE if conn.dialect.name == "sqlite"
                                else nodestore.ROLE_CENTRAL)
                conn.execute(text("UPDATE store_info SET value = :r WHERE key = 'role'"),
                             {"r": role})
            after = MigrationContext.configure(conn).get_current_revision() or ""
            return before, after
    except SQLAlchemyError as e:
        raise StoreError(f"cannot upgrade store {safe_url(url)}: {first_line(e, url)}") \
            from None
    finally:
        engine.dispose()


def _has_foreign_tables(conn) -> bool:
    from sqlalchemy import inspect

    return bool(set(inspect(conn).get_table_names()) - {"alembic_version"})


def _create_node_store(path: str) -> None:
    """A complete new node store at ``path``, or nothing: built under a temporary name and
    renamed into place, so a set-up killed at any moment leaves no half-made store."""
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.{os.urandom(6).hex()}.new"
    # Created 0600 before SQLite opens it: the log may name hosts and payloads.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        upgrade("sqlite:///" + tmp, nodestore.ROLE_NODE)
        conn = sqlite3.connect(tmp)
        try:
            # Write-ahead logging: readers never block the handler; it persists in the file.
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            try:
                os.unlink(leftover)
            except OSError:
                pass
        raise


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: str) -> None:
    """Create a base dir (and its parents) 0755 whatever the umask: Serf's handler may run
    with umask 0, and a world-writable base dir would let anyone plant files in it. One
    line, not a traceback, if it cannot be done."""
    try:
        os.makedirs(directory or ".", mode=0o755, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create {directory}: {e.strerror or e}") from None


def _lock_file(path: str) -> int:
    """The store's set-up lock (``<store>.lock``), opened safely (see
    :func:`files.open_lock`); a refusal (a planted symlink, another user's file) is one
    line."""
    try:
        return files.open_lock(path + ".lock")
    except OSError as e:
        raise StoreError(e.strerror or str(e)) from None


def _remove_leftovers(path: str) -> None:
    """Temporary stores of set-ups killed before their rename."""
    directory = os.path.dirname(path) or "."
    prefix = os.path.basename(path) + "."
    for name in os.listdir(directory):
        if name.startswith(prefix) and (name.endswith(".new") or name.endswith(".new-wal")
                                        or name.endswith(".new-shm")):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _needs_creating(path: str) -> bool:
    if not os.path.exists(path):
        return True
    try:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            conn.close()
    except sqlite3.Error:
        return False  # not SQLite at all: upgrade() says so in one line


def init(settings: Settings, observer: str = "", received_us: int | None = None,
         record_catalog: bool = True, progress=None) -> dict:
    """Create or upgrade the store, record the catalog if it changed, bring everything
    derived (the live file included) up to date. Idempotent.

    Concurrent callers (handlers set up on the spot) are serialised by a lock file beside the
    SQLite store."""
    _make_dirs(settings.base_dir)
    path = settings.sqlite_path
    if path is None:
        before, after = upgrade(settings.db_url)
        refold_central(settings.db_url, progress)
        return {"store": safe_url(settings.db_url), "from": before, "to": after}
    _make_dirs(os.path.dirname(path))
    import fcntl

    lock = _lock_file(path)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_leftovers(path)
        if _needs_creating(path):
            _create_node_store(path)
            before, after = None, SCHEMA_REVISION
        else:
            before, after = upgrade(settings.db_url)
    finally:
        os.close(lock)
    if received_us is None:
        import time

        received_us = time.time_ns() // 1000
    store = nodestore.NodeStore(path)
    try:
        if store.role_of() != nodestore.ROLE_NODE:
            raise StoreError(f"{path} is a central store; init makes node stores")
        warnings: list[str] = []
        if record_catalog:
            from ..handler import CATALOG_LIMIT

            data, problem = files.read_regular(settings.catalog, CATALOG_LIMIT)
            with store.write():
                item = nodestore.catalog_item(store, data, received_us, observer, problem)
                if item is not None:
                    store.append([item])
                    if problem:
                        warnings.append(problem)
        state, _, notes = derive.catch_up(store, nodestore.NODE, settings.live_file,
                                          fmt=settings.live_format, progress=progress)
    finally:
        store.close()
    from ..core.fold import live_nodes

    return {"store": path, "from": before, "to": after, "seq": state.seq,
            "live": sorted(live_nodes(state)),
            "warnings": warnings + [w for seq in sorted(notes) for w in notes[seq]]}


def refold_central(url: str, progress=None) -> None:
    """Bring a central store's derived tables up to date for every log it holds."""
    store = open_store(url)
    try:
        if store.role != nodestore.ROLE_CENTRAL:
            return
        for origin in store.origins():
            store.catch_up(origin, progress=progress)
    finally:
        store.close()


def store_role(url: str) -> str:
    """The role recorded in a store (``node`` or ``central``)."""
    path = sqlite_path_of(url)
    if path is not None:
        with nodestore.NodeStore(path) as s:
            return s.role_of()
    return nodestore.ROLE_CENTRAL


def open_store(url: str):
    """The store at ``url``, opened for its role: a :class:`~.nodestore.NodeStore` (stdlib,
    no SQLAlchemy) or a :class:`~.centralstore.CentralStore`."""
    path = sqlite_path_of(url)
    if path is not None:
        store = nodestore.NodeStore(path)
        try:
            role = store.role_of()
        except StoreError:
            store.close()
            raise
        if role == nodestore.ROLE_NODE:
            return store
        store.close()
    from .central import CentralStore

    return CentralStore(url)


def upgrade_store(settings: Settings, role: str | None = None, progress=None) -> tuple:
    """``membership db upgrade``: the migrations, then everything derived brought up to date
    (an upgrade that adds or reshapes a derived table leaves it to be refolded: without this,
    an upgraded store would report an audit without its history). Returns (from, to)."""
    path = settings.sqlite_path
    if path is not None and _needs_creating(path) and role != nodestore.ROLE_CENTRAL:
        _make_dirs(os.path.dirname(path))
        import fcntl

        lock = _lock_file(path)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _needs_creating(path):
                _create_node_store(path)
                return None, SCHEMA_REVISION
        finally:
            os.close(lock)
    if path is not None and not os.path.exists(path):
        # Created 0600 before SQLite opens it: the log may name hosts and payloads.
        _make_dirs(os.path.dirname(path))
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o600))
        except OSError as e:
            raise StoreError(f"cannot create store {path}: {e.strerror or e}") from None
    before, after = upgrade(settings.db_url, role)
    if path is not None:
        os.chmod(path, 0o600)
    if before == after:
        return before, after
    store = open_store(settings.db_url)
    try:
        if store.role == nodestore.ROLE_NODE:
            derive.catch_up(store, nodestore.NODE, settings.live_file, settings.live_format,
                            progress=progress)
        else:
            for origin in store.origins():
                store.catch_up(origin, progress=progress)
    finally:
        store.close()
    return before, after
