"""Creating, upgrading and opening stores: Alembic from code, and the choice of role.

A store has a role, recorded in it when it is created (``store_info``): a **node** store holds
one node's own log, written by its handler through the stdlib (:mod:`.nodestore`); a
**central** store holds every node's shipped log (:mod:`.centralstore`, SQLAlchemy). Nothing
picks the role from the SQL dialect: :func:`open_store` reads it.

Only the slow paths come here (``init``, ``db upgrade``, the handler's first run in a new base
dir); Alembic and SQLAlchemy are imported inside the functions that need them. Bringing the
derived tables up to date after a set-up is the history layer's job
(:mod:`membership_log.history.setup`): the stores never fold.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..core.errors import MembershipError, SchemaMismatch, StoreError
from ..core.redact import first_line, mask_url
from ..settings import sqlite_path_of, store_url
from ..version import SCHEMA_REVISION
from . import access, files
from . import node as nodestore
from .connect import engine_for
from .protocol import NODE, ROLE_CENTRAL, ROLE_NODE, Store

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (SQLAlchemy loads lazily)
if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection


def migrations_dir() -> str:
    """The Alembic scripts: inside the package when installed, top-level in a checkout."""
    here = Path(__file__).resolve().parent.parent  # the package (membership_log/)
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise StoreError(f"the migrations are missing from {here} (a broken install?)")


def _alembic_config(connection: Connection | None) -> Config:
    import io

    from alembic.config import Config

    # Alembic's Config binds sys.stdout as a default argument at import time; give it its own
    # stream (the CLI reports results itself) rather than whatever stdout was back then.
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", migrations_dir())
    cfg.attributes["connection"] = connection
    return cfg


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_alembic_config(None))
            .walk_revisions()}


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
                raise SchemaMismatch(nodestore.schema_message(mask_url(url), before))
            if before is None and _has_foreign_tables(conn):
                raise StoreError(f"{mask_url(url)} holds tables that are not a membership-log "
                                 f"store; refusing to write into it")
            command.upgrade(_alembic_config(conn), "head")
            if before is None:
                role = role or (ROLE_NODE if conn.dialect.name == "sqlite"
                                else ROLE_CENTRAL)
                conn.execute(text("UPDATE store_info SET value = :r WHERE key = 'role'"),
                             {"r": role})
            after = MigrationContext.configure(conn).get_current_revision() or ""
            return before, after
    except SQLAlchemyError as e:
        path = sqlite_path_of(url)
        why = access.denied(path, "write") if path is not None else None
        raise StoreError(why or f"cannot upgrade store {mask_url(url)}: "
                         f"{first_line(e, url)}") from None
    finally:
        engine.dispose()


def _has_foreign_tables(conn: Connection) -> bool:
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
        upgrade("sqlite:///" + tmp, ROLE_NODE)
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
        files.fsync_dir(directory)
    except BaseException:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            try:
                os.unlink(leftover)
            except OSError:
                pass
        raise


def make_dirs(directory: str) -> None:
    """Create a base dir (and its parents) 0755 whatever the umask: Serf's handler may run
    with umask 0, and a world-writable base dir would let anyone plant files in it. One
    line, not a traceback, if it cannot be done."""
    try:
        os.makedirs(directory or ".", mode=0o755, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create {directory} as {access.user_label()}: "
                         f"{e.strerror or e}") from None


def _lock_file(path: str) -> int:
    """The store's set-up lock (``<store>.lock``), opened safely (see
    :func:`files.open_lock`); a refusal (a planted symlink, another user's file) is one
    line."""
    try:
        return files.open_lock(path + ".lock")
    except OSError as e:
        # Set-up writes the store: a user who may not is told which file and what to do.
        why = access.denied(path, "write") if os.path.exists(path) else None
        raise StoreError(why or e.strerror or str(e)) from None


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


def prepare(url: str, role: str | None = None, gid: int | None = None) -> tuple[str | None, str]:
    """Create or upgrade the store at ``url``; returns the revisions (from, to).

    A SQLite path gets a whole new node store (built under a temporary name and renamed into
    place, under the set-up lock, so that handlers set up on the spot at once make one store,
    and a set-up killed at any moment leaves none or a whole one), unless ``role`` says
    central; any other store is upgraded in place by Alembic. A new store gets ``role``
    (default: node for SQLite, central for a database server). A SQLite store file is the
    owner's alone (0600), or, with ``gid`` (``--store-group``), group-readable by that group
    (0640, its -wal and -shm kept for its readers: see :mod:`.access`)."""
    path = sqlite_path_of(url)
    if path is None:
        if gid is not None:
            raise MembershipError(f"--store-group applies to a SQLite store's files, not to "
                                  f"{mask_url(url)} (the database server has its own grants)")
        return upgrade(url, role)
    make_dirs(os.path.dirname(path))
    import fcntl

    lock = _lock_file(path)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_leftovers(path)
        if _needs_creating(path):
            if role in (None, ROLE_NODE):
                _create_node_store(path)
                _share(path, gid)
                return None, SCHEMA_REVISION
            # Created 0600 before SQLite opens it: the log may name hosts and payloads.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o600))
            except FileExistsError:
                pass
            except OSError as e:
                raise StoreError(f"cannot create store {path}: {e.strerror or e}") from None
        before, after = upgrade(url, role)
        _share(path, gid)
    finally:
        os.close(lock)
    return before, after


def _share(path: str, gid: int | None) -> None:
    try:
        access.share_store(path, gid)
    except OSError as e:
        raise StoreError(f"cannot set the mode or group of store {path}: "
                         f"{e.strerror or e}") from None


def remove_empty_node_store(path: str) -> None:
    """Remove a node store that holds no event (and its WAL and shared-memory files), under
    the set-up lock: what a failed import into a new base dir leaves must not stay behind.
    A store that gained an event meanwhile (a handler ran) is kept."""
    import fcntl

    lock = _lock_file(path)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with nodestore.NodeStore(path) as store:
                if store.head(NODE)[0]:
                    return
        except StoreError:
            return
        for name in (path, path + "-wal", path + "-shm"):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
    finally:
        os.close(lock)
    try:
        os.unlink(path + ".lock")
    except OSError:
        pass


def open_node_store(url: str, command: str) -> nodestore.NodeStore:
    """The node store at ``url`` for a command that only a node's own log can serve
    (``import``, ``ship``, ``compact``, ``head``): anything else is one line naming why."""
    url = store_url(url)
    if sqlite_path_of(url) is None:
        raise MembershipError(f"{command} works on a node's SQLite store; --db names a "
                              f"central store ({mask_url(url)})")
    store = open_store(url)
    if not isinstance(store, nodestore.NodeStore):  # the role recorded in it is central
        store.close()
        raise MembershipError(f"{store.label} is a central store; {command} works on node "
                              f"stores")
    return store


def open_store(url: str) -> Store:
    """The store at ``url``, opened for its role: a :class:`~.nodestore.NodeStore` (stdlib,
    no SQLAlchemy) or a :class:`~.centralstore.CentralStore`. A plain path means SQLite."""
    url = store_url(url)
    path = sqlite_path_of(url)
    if path is not None:
        store = nodestore.NodeStore(path)
        try:
            role = store.role_of()
        except StoreError:
            store.close()
            raise
        if role == ROLE_NODE:
            return store
        store.close()
    from .central import CentralStore

    return CentralStore(url)


