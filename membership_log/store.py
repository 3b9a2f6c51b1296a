"""The store through SQLAlchemy: schema management (Alembic, from code) and reads that work
the same on SQLite and PostgreSQL. The only module that imports SQLAlchemy; it returns core
records (:data:`~membership_log.raw.RawEvent`) and raises :class:`StoreError`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from . import journal as _journal
from .errors import SchemaMismatch, StoreError
from .raw import RawEvent, decode_env
from .schema import checkpoint, cluster_event, event, incident, snapshot
from .settings import Settings, sqlite_path_of
from .version import SCHEMA_REVISION


def migrations_dir() -> str:
    """The Alembic scripts: inside the package when installed, top-level in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise StoreError(f"the migrations are missing from {here} (a broken install?)")


def _alembic_config(connection: Connection):
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

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def driver_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy alone would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_for(url: str) -> Engine:
    try:
        return create_engine(driver_url(url))
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise StoreError(f"cannot use store URL {url!r}: {e}") from e


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the store at ``url`` to this release's schema. Returns (from, to) revisions."""
    from alembic import command

    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            before = current_revision(conn)
            if before == SCHEMA_REVISION:
                return before, before
            known = _known_revisions()
            if before is not None and before not in known:
                raise SchemaMismatch(
                    f"store {_safe(url)} is at schema revision {before!r}, unknown to this "
                    f"release (newer?); upgrade membership-log instead"
                )
            if before is None and _has_foreign_tables(conn):
                raise StoreError(
                    f"{_safe(url)} holds tables that are not a membership-log store; "
                    f"refusing to write into it"
                )
            command.upgrade(_alembic_config(conn), "head")
            return before, current_revision(conn) or ""
    except SQLAlchemyError as e:
        raise StoreError(f"cannot upgrade store {_safe(url)}: {_first_line(e)}") from e
    finally:
        engine.dispose()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}


def _has_foreign_tables(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return bool(set(inspect(conn).get_table_names()) - {"alembic_version"})


def _safe(url: str) -> str:
    """A URL fit for an error message (no password)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def init(settings: Settings, observer: str = "", received_us: int | None = None) -> dict:
    """Create or upgrade the store, record the catalog if it changed, write the live file.

    Idempotent. Concurrent callers (handlers set up on the spot) are serialised by a lock
    file beside the SQLite store.
    """
    os.makedirs(settings.base_dir, exist_ok=True)
    path = settings.sqlite_path
    if path is None:
        before, after = upgrade(settings.db_url)
        return {"store": _safe(settings.db_url), "from": before, "to": after}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            # Created 0600 before SQLite opens it: the log may name hosts and payloads.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        before, after = upgrade(settings.db_url)
        _use_wal(path)
    if received_us is None:
        import time

        received_us = time.time_ns() // 1000
    j = _journal.Journal(path)
    try:
        with j.write():
            item = _journal.catalog_item(j, settings.catalog, received_us, observer)
            if item is not None:
                j.append([item])
        state, live, warnings = _journal.catch_up(j, settings.live_file,
                                                  fmt=settings.live_format)
    finally:
        j.close()
    from .project import live_nodes

    return {"store": path, "from": before, "to": after, "seq": state.seq,
            "live": sorted(live_nodes(state)),
            "warnings": [w for seq in sorted(warnings) for w in warnings[seq]]}


def _use_wal(path: str) -> None:
    """Write-ahead logging: readers never block the handler, and it persists in the file."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


class Store:
    """A store opened for reading, SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        path = sqlite_path_of(url)
        if path is not None and not os.path.exists(path):
            raise StoreError(f"no store at {path} (run: membership init)")
        self.url = url
        self.engine = engine_for(url)
        try:
            with self.engine.connect() as conn:
                revision = current_revision(conn)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot open store {_safe(url)}: {_first_line(e)}") from e
        if revision is None:
            raise StoreError(f"{_safe(url)} is not a membership-log store (run: membership init)")
        if revision != SCHEMA_REVISION:
            raise SchemaMismatch(
                f"store {_safe(url)} is at schema revision {revision!r}, this release reads "
                f"{SCHEMA_REVISION!r} (run: membership db upgrade)"
            )
        #: A central store (PostgreSQL) holds every node's shipped events in cluster_event;
        #: a node's own store (SQLite) its log in event.
        self.central = self.engine.dialect.name != "sqlite"

    def origins(self) -> list[str]:
        """The nodes whose logs a central store holds."""
        if not self.central:
            return []
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(cluster_event.c.origin).distinct().order_by(cluster_event.c.origin)
            ).scalars())

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def raw_events(self, after: int = 0, until: int | None = None,
                   origin: str | None = None) -> Iterator[RawEvent]:
        """Raw events in sequence order, streamed: the log of a node's store, or of one
        ``origin`` in a central store."""
        t = cluster_event if self.central else event
        q = select(t).where(t.c.seq > after).order_by(t.c.seq)
        if self.central:
            q = q.where(t.c.origin == origin)
        if until is not None:
            q = q.where(t.c.seq <= until)
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=2000).execute(q)
                for r in result:
                    yield RawEvent(r.seq, r.received_us, r.observer, r.source,
                                   decode_env(r.env), bytes(r.stdin), bytes(r.hash))
        except SQLAlchemyError as e:
            raise StoreError(f"cannot read store {_safe(self.url)}: {_first_line(e)}") from e

    def raw_events_by_time(self) -> Iterator[tuple[str, RawEvent]]:
        """A central store's events of every origin, as ``(origin, raw)`` in receive-time
        order (each origin's own order kept for equal times), streamed by one query."""
        t = cluster_event
        q = select(t).order_by(t.c.received_us, t.c.origin, t.c.seq)
        try:
            with self.engine.connect() as conn:
                for r in conn.execution_options(yield_per=2000).execute(q):
                    yield r.origin, RawEvent(r.seq, r.received_us, r.observer, r.source,
                                             decode_env(r.env), bytes(r.stdin), bytes(r.hash))
        except SQLAlchemyError as e:
            raise StoreError(f"cannot read store {_safe(self.url)}: {_first_line(e)}") from e

    def snapshot(self) -> tuple | None:
        """The head snapshot as ``(seq, state, live bytes)``; ``state`` is None if it is in
        another format or damaged. None if there is no snapshot (or a central store)."""
        if self.central:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(snapshot).where(snapshot.c.name == _journal.HEAD)).first()
        if row is None:
            return None
        return (row.seq, _journal.decode_state(row.format, bytes(row.state)), bytes(row.live))

    def head_seq(self) -> int:
        """The last event's seq in a node's store (0 if empty)."""
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return conn.execute(select(func.max(event.c.seq))).scalar_one() or 0

    def last_seq_at_or_before(self, us: int) -> int:
        """The event after which a node's store stood at time ``us``: the last seq before
        the first event received later. A binary search on the (receive-time ordered) log:
        a handful of key lookups, whatever its length."""
        lo, hi = 1, self.head_seq() + 1
        with self.engine.connect() as conn:
            while lo < hi:
                mid = (lo + hi) // 2
                at = conn.execute(select(event.c.received_us).where(event.c.seq == mid)
                                  ).scalar_one()
                if at > us:
                    hi = mid
                else:
                    lo = mid + 1
        return lo - 1

    def checkpoint_at_or_before(self, seq: int) -> tuple[int, object]:
        """The latest usable checkpoint (or head snapshot) at or before ``seq``, as
        ``(its seq, state)``; ``(0, EMPTY)`` if there is none."""
        from .project import EMPTY

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(checkpoint.c.seq, checkpoint.c.format, checkpoint.c.state)
                .where(checkpoint.c.seq <= seq).order_by(checkpoint.c.seq.desc()).limit(3)
            ).all()
            head = conn.execute(select(snapshot.c.seq, snapshot.c.format, snapshot.c.state)
                                .where(snapshot.c.name == _journal.HEAD)).first()
        candidates = list(rows) + ([head] if head is not None and head.seq <= seq else [])
        for row in sorted(candidates, key=lambda r: -r.seq):
            state = _journal.decode_state(row.format, bytes(row.state))
            if state is not None and state.seq == row.seq:
                return row.seq, state
        return 0, EMPTY

    def derived_current(self) -> bool:
        """Whether a node's store has folded its whole log (snapshot at the head)."""
        if self.central:
            return False
        with self.engine.connect() as conn:
            snap = conn.execute(select(snapshot.c.seq, snapshot.c.format)
                                .where(snapshot.c.name == _journal.HEAD)).first()
        return (snap is not None and snap.format == _journal.SNAPSHOT_FORMAT
                and snap.seq == self.head_seq())

    def head_state(self):
        """The fold's state at the head snapshot (EMPTY if none is usable)."""
        return self.checkpoint_at_or_before(self.head_seq())[1]

    def incidents(self, until_us: int) -> list:
        """The derived incidents that began at or before ``until_us``, in the order they
        began, as :data:`membership_log.audit.Incident`."""
        from .audit import Incident

        q = (select(incident).where(incident.c.down_at <= until_us)
             .order_by(incident.c.down_at, incident.c.node))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [Incident(r.node, r.down_at, r.up_at, r.cause,
                         (r.observer,) if r.observer else (), r.down_seq, r.up_seq)
                for r in rows]

    def checkpoints(self) -> dict:
        """Every checkpoint: seq -> state (None if in another format or damaged)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(checkpoint).order_by(checkpoint.c.seq)).all()
        return {r.seq: _journal.decode_state(r.format, bytes(r.state)) for r in rows}

    def received_at(self, seq: int, origin: str | None = None) -> int | None:
        """When event ``seq`` (of ``origin``, in a central store) was received."""
        t = cluster_event if self.central else event
        q = select(t.c.received_us).where(t.c.seq == seq)
        if self.central:
            q = q.where(t.c.origin == origin)
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one_or_none()


SHIP_BATCH = 5000


def ship(local_path: str, central_url: str, progress=None, batch: int = SHIP_BATCH) -> dict:
    """Copy the local log's new events to the central store, batch by batch.

    Idempotent and resumable: the central store's last event of this origin says where to
    go on, and each batch is one transaction (a kill loses at most an uncommitted batch,
    which the next run copies again). Before copying, the central copy must continue the
    local hash chain: the local event at the central head must carry the same hash.
    """
    from sqlalchemy import func, insert

    j = _journal.Journal(local_path)
    central = Store(central_url)
    try:
        if not central.central:
            raise StoreError(f"{_safe(central_url)} is not a central store (PostgreSQL)")
        origin = j.origin()
        if origin is None:
            raise StoreError(f"store {local_path} has no event with an observer yet: "
                             f"nothing identifies the node to ship as")
        local_head, _ = j.head()
        with central.engine.connect() as conn:
            row = conn.execute(
                select(cluster_event.c.seq, cluster_event.c.hash)
                .where(cluster_event.c.origin == origin)
                .order_by(cluster_event.c.seq.desc()).limit(1)
            ).first()
        start = row.seq if row else 0
        if start > local_head:
            raise StoreError(f"the central store holds {start} events of {origin}, the local "
                             f"log only {local_head}: they are not the same log")
        if row is not None and j.hash_at(start) != bytes(row.hash):
            raise StoreError(f"the central copy of {origin} diverges from the local log at "
                             f"event {start}; refusing to ship")
        total = local_head - start
        done = 0
        if progress is not None:
            progress(0, total)
        while True:
            rows = j.raw_range(start + done, batch)
            if not rows:
                break
            with central.engine.begin() as conn:
                _copy_rows(conn, origin, rows, insert)
            done += len(rows)
            if progress is not None:
                progress(done, total)
        with central.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(cluster_event)
                                 .where(cluster_event.c.origin == origin)).scalar_one()
        return {"origin": origin, "copied": done, "central_head": start + done,
                "central_count": count}
    except SQLAlchemyError as e:
        raise StoreError(f"cannot ship to {_safe(central_url)}: {_first_line(e)}") from e
    finally:
        j.close()
        central.close()


_COLUMNS = ("origin", "seq", "received_us", "observer", "source", "env", "stdin", "hash")


def _copy_rows(conn: Connection, origin: str, rows: list, insert) -> None:
    """One batch into cluster_event, inside the caller's transaction. On PostgreSQL through
    COPY (psycopg 3), several times faster than multi-row INSERTs; elsewhere an INSERT."""
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            with cur.copy(f"COPY cluster_event ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((origin, r.seq, r.received_us, r.observer, r.source,
                                    r.env_blob, r.stdin, r.hash))
        return
    conn.execute(insert(cluster_event), [
        dict(zip(_COLUMNS, (origin, r.seq, r.received_us, r.observer, r.source, r.env_blob,
                            r.stdin, r.hash), strict=True)) for r in rows])
