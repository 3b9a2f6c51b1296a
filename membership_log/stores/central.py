"""A central store: every node's shipped log, on PostgreSQL (or SQLite), through SQLAlchemy.

The role a central store plays: ``membership ship`` appends each node's raw events to
``cluster_event`` (keyed by origin and that node's seq, hash included, so each chain still
verifies here) and, in the same transaction, keeps the derived tables for that origin with
the one fold driver (:mod:`membership_log.history.driver`): checkpoints, incidents, observer
sessions, the head snapshot. So a post-mortem on the central store costs what it costs on a
node store, for one node or merged over all of them.

It offers the same reader protocol as :class:`~membership_log.stores.node.NodeStore`, with its
own SQL beside it. Every SQLAlchemy error is translated here into one :class:`StoreError`
line with any password masked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from ..core.codec import STATE_FORMAT, decode_state
from ..core.errors import MembershipError, SchemaMismatch, StoreError
from ..core.raw import GENESIS, RawEvent, raw_of_row
from ..core.redact import first_line, mask_url
from ..version import SCHEMA_REVISION
from . import queries
from .connect import engine_for
from .node import schema_message
from .protocol import ROLE_CENTRAL, Anchor, Scope, Store
from .schema import (
    anchor,
    checkpoint,
    cluster_event,
    incident,
    merkle_head,
    observer_session,
    snapshot,
    store_info,
    witness_head,
)

_EVENT_COLUMNS = ("origin", "seq", "received_us", "observer", "source", "env", "stdin", "hash")
_MIN_RECEIVED = queries.MIN_RECEIVED.format(table="cluster_event", origin="origin = :origin AND ")


class CentralStore(Store):
    """An open central store. :meth:`write` gives a transaction that the reader methods
    then use too (so a fold and its derived rows commit together)."""

    role = ROLE_CENTRAL

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = mask_url(url)
        self.engine = engine_for(url)
        self._conn: Connection | None = None
        try:
            with self.engine.connect() as conn:
                # Read the revision directly: importing Alembic costs a read command more
                # than its whole query.
                revision = None
                if self.engine.dialect.has_table(conn, "alembic_version"):
                    revision = conn.execute(text("SELECT version_num FROM alembic_version")
                                            ).scalar()
                role = None
                if revision == SCHEMA_REVISION:
                    role = conn.execute(select(store_info.c.value)
                                        .where(store_info.c.key == "role")).scalar()
        except SQLAlchemyError as e:
            self.engine.dispose()
            raise StoreError(f"cannot open store {mask_url(url)}: {first_line(e, url)}") \
                from None
        if revision is None:
            self.engine.dispose()
            raise StoreError(f"{mask_url(url)} is not a membership-log store (run: membership "
                             f"db upgrade --db URL)")
        if revision != SCHEMA_REVISION:
            self.engine.dispose()
            raise SchemaMismatch(schema_message(mask_url(url), revision))
        if role != ROLE_CENTRAL:
            self.engine.dispose()
            raise StoreError(f"{mask_url(url)} is a {role} store, not a central one")
        self.postgres = self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    def _fail(self, e: Exception, what: str = "read") -> StoreError:
        return StoreError(f"cannot {what} store {mask_url(self.url)}: {first_line(e, self.url)}")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction; the reader methods use it until it ends."""
        try:
            with self.engine.begin() as conn:
                self._conn = conn
                try:
                    yield conn
                finally:
                    self._conn = None
        except SQLAlchemyError as e:
            raise self._fail(e, "write") from None

    read = write  # a transaction is a consistent snapshot too (REPEATABLE READ not needed:
    # every query of a fold runs inside one transaction and the log is append-only)

    def _writing(self) -> Connection:
        """The connection of the :meth:`write` transaction the caller is inside."""
        assert self._conn is not None, "only inside write()"
        return self._conn

    @contextmanager
    def _use(self) -> Iterator[Connection]:
        if self._conn is not None:
            yield self._conn
            return
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise self._fail(e) from None

    def _all(self, query: Any, params: dict | None = None) -> Sequence[Any]:
        try:
            with self._use() as conn:
                return conn.execute(query, params or {}).all()
        except SQLAlchemyError as e:
            raise self._fail(e) from None

    def _scalar(self, query: Any, params: dict | None = None) -> Any:
        try:
            with self._use() as conn:
                return conn.execute(query, params or {}).scalar()
        except SQLAlchemyError as e:
            raise self._fail(e) from None

    # -- the reader protocol ----------------------------------------------------------------

    def origins(self) -> list[str]:
        """The nodes whose logs this store holds (a skip scan over the primary key: one
        lookup per origin, however many events each has)."""
        q = text("WITH RECURSIVE o(origin) AS ("
                 " SELECT min(origin) FROM cluster_event"
                 " UNION ALL SELECT (SELECT min(origin) FROM cluster_event c"
                 " WHERE c.origin > o.origin) FROM o WHERE o.origin IS NOT NULL)"
                 " SELECT origin FROM o WHERE origin IS NOT NULL")
        return [r[0] for r in self._all(q)]

    def scope(self, observer: str | None) -> Scope:
        origins = self.origins()
        if observer is None:
            return Scope(origins, True, None)
        if observer not in origins:
            from ..core.names import unknown

            raise MembershipError(unknown("observer", observer, origins,
                                          f"the central store {self.label} holds no log of"))
        return Scope([observer], False, None)

    def head(self, origin: str) -> tuple[int, bytes]:
        rows = self._all(select(cluster_event.c.seq, cluster_event.c.hash)
                         .where(cluster_event.c.origin == origin)
                         .order_by(cluster_event.c.seq.desc()).limit(1))
        return (rows[0][0], bytes(rows[0][1])) if rows else (0, GENESIS)

    def first_seq(self, origin: str) -> int:
        return 1

    def anchor(self, origin: str) -> Anchor | None:
        return None  # retention is a node's: every shipped log is whole here

    def events(self, origin: str, after: int = 0,
               until: int | None = None) -> Iterator[RawEvent]:
        return map(raw_of_row, self.rows(origin, after, until))

    def rows(self, origin: str, after: int = 0, until: int | None = None) -> Iterator[tuple]:
        t = cluster_event
        q = (select(t.c.seq, t.c.received_us, t.c.observer, t.c.source, t.c.env, t.c.stdin,
                    t.c.hash).where(t.c.origin == origin, t.c.seq > after).order_by(t.c.seq))
        if until is not None:
            q = q.where(t.c.seq <= until)
        try:
            with self._use() as conn:
                for r in conn.execute(q, execution_options={"yield_per": 2000}):
                    yield (r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5]), bytes(r[6]))
        except SQLAlchemyError as e:
            raise self._fail(e) from None

    def hashes(self, origin: str, first: int, last: int) -> list[tuple[int, bytes]]:
        t = cluster_event
        return [(r[0], bytes(r[1])) for r in self._all(select(t.c.seq, t.c.hash).where(
            t.c.origin == origin, t.c.seq >= first, t.c.seq <= last).order_by(t.c.seq))]

    def received_at(self, origin: str, seq: int) -> int | None:
        return self._scalar(select(cluster_event.c.received_us).where(
            cluster_event.c.origin == origin, cluster_event.c.seq == seq))

    def last_received_by(self, origin: str, us: int, after: int, until: int) -> int | None:
        t = cluster_event
        return self._scalar(select(func.max(t.c.seq)).where(
            t.c.origin == origin, t.c.seq > after, t.c.seq <= until, t.c.received_us <= us))

    def latest_anchors(self, origin: str) -> list:
        t = cluster_event
        return [(r[0], bytes(r[1])) for r in self._all(
            select(t.c.seq, t.c.stdin).where(t.c.origin == origin, t.c.source == "anchor")
            .order_by(t.c.seq.desc()).limit(8))]

    # -- the Merkle tree and the heads witnessed --------------------------------------------

    def tree(self, origin: str) -> tuple[int, bytes] | None:
        rows = self._all(select(merkle_head.c.size, merkle_head.c.frontier)
                         .where(merkle_head.c.origin == origin))
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    def put_tree(self, origin: str, size: int, frontier: bytes) -> None:
        try:
            self._upsert(self._writing(), merkle_head, [{"origin": origin, "size": size,
                                                         "frontier": frontier}])
        except SQLAlchemyError as e:
            raise self._fail(e, "write") from None

    def witnessed_heads(self, head_origin: str | None = None, after: int = -1,
                        through: int | None = None, log: str | None = None) -> list[tuple]:
        w = witness_head
        q = select(*w.c).where(w.c.size > after)
        if head_origin is not None:
            q = q.where(w.c.head_origin == head_origin)
        if through is not None:
            q = q.where(w.c.size <= through)
        if log is not None:
            q = q.where(w.c.origin == log)
        q = q.order_by(w.c.head_origin, w.c.size, w.c.origin, w.c.seq)
        return [(*r[:6], bytes(r[6]), r[7]) for r in self._all(q)]

    def snapshot(self, origin: str) -> tuple | None:
        rows = self._all(select(snapshot.c.seq, snapshot.c.format, snapshot.c.state,
                                snapshot.c.live).where(snapshot.c.origin == origin))
        return tuple(rows[0]) if rows else None

    def checkpoint_at_or_before(self, origin: str, seq: int) -> tuple | None:
        c = checkpoint
        for r in self._all(select(c.c.seq, c.c.max_at, c.c.format, c.c.state)
                           .where(c.c.origin == origin, c.c.seq <= seq)
                           .order_by(c.c.seq.desc()).limit(3)):
            state = decode_state(r[2], bytes(r[3]))
            if state is not None and state.seq == r[0]:
                return r[0], r[1], state
        return None

    def stretch_received_by(self, origin: str, us: int) -> tuple[int, int] | None:
        through = self._scalar(text(queries.STRETCH), {"origin": origin, "us": us})
        if through is None:
            return None
        after = self._scalar(text(queries.PREVIOUS_CHECKPOINT), {"origin": origin,
                                                                 "seq": through})
        return (after or 0), through

    def last_checkpoint(self, origin: str) -> tuple[int, int | None]:
        rows = self._all(text(queries.LAST_CHECKPOINT), {"origin": origin})
        return (rows[0][0], rows[0][1]) if rows else (0, None)

    def checkpoints(self, origin: str) -> list[tuple]:
        c = checkpoint
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in self._all(
            select(c.c.seq, c.c.max_at, c.c.min_at, c.c.format, c.c.state)
            .where(c.c.origin == origin).order_by(c.c.seq))]

    def incidents(self, origin: str, since_us: int | None = None,
                  until_us: int | None = None, nodes: tuple = (None, None),
                  by_node: bool = False) -> list[tuple]:
        sql, params, post = queries.incidents(since_us, until_us, nodes, by_node)
        params["origin"] = origin
        return queries.finish_incidents([tuple(r) for r in self._all(text(sql), params)],
                                        until_us, post)

    def sessions(self, origin: str) -> list[tuple]:
        s = observer_session
        return [tuple(r) for r in self._all(
            select(s.c.seq, s.c.observer, s.c.started_at, s.c.gap_from)
            .where(s.c.origin == origin).order_by(s.c.seq))]

    # -- keeping the derived tables ---------------------------------------------------------

    def _upsert(self, conn: Connection, table: Table, rows: list[dict]) -> None:
        if not rows:
            return
        insert: Callable[[Any], Any]
        if self.postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:  # the same insert(), with the same on_conflict_do_update
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        keys = [c.name for c in table.primary_key.columns]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys})
        conn.execute(stmt, rows)

    def write_derived(self, origin: str, batch: Any) -> None:  # a history.driver.Batch
        """Store a :class:`membership_log.history.driver.Batch` (inside :meth:`write`)."""
        conn = self._writing()
        try:
            self._upsert(conn, checkpoint, self._with_min_at(conn, origin, batch.checkpoints))
            if batch.closed:  # first: the batch's own new incidents are open too
                i = incident
                conn.execute(
                    i.update().where(i.c.origin == bindparam("o"), i.c.node == bindparam("n"),
                                     i.c.up_seq.is_(None))
                    .values(up_seq=bindparam("us"), up_at=bindparam("ua")),
                    [{"o": origin, "n": n, "us": us, "ua": ua} for n, us, ua in batch.closed])
            # after closing: the batch's own new incidents are open too
            self._upsert(conn, incident, [
                dict(zip(("origin", "node", "down_at", "up_at", "cause", "observer",
                          "down_seq", "up_seq"), (origin, *row), strict=True))
                for row in batch.incidents])
            self._upsert(conn, observer_session, [
                dict(zip(("origin", "seq", "observer", "started_at", "gap_from"),
                         (origin, *row), strict=True)) for row in batch.sessions])
            self._upsert(conn, witness_head, [
                dict(zip([c.name for c in witness_head.c], (origin, *row), strict=True))
                for row in batch.heads])
            if batch.snapshot is not None:
                seq, blob, live = batch.snapshot
                self._upsert(conn, snapshot, [{"origin": origin, "seq": seq,
                                               "format": STATE_FORMAT, "state": blob,
                                               "live": live}])
        except SQLAlchemyError as e:
            raise self._fail(e, "write") from None

    def _with_min_at(self, conn: Connection, origin: str, checkpoints: list) -> list[dict]:
        """Checkpoint rows with the earliest receive time of the events since the previous
        checkpoint (this transaction sees the events being shipped)."""
        out = []
        after = None
        for seq, max_at, blob in checkpoints:
            if after is None:
                after = conn.execute(text(queries.PREVIOUS_CHECKPOINT),
                                     {"origin": origin, "seq": seq}).scalar() or 0
            low = conn.execute(text(_MIN_RECEIVED), {"origin": origin, "after": after,
                                                     "through": seq}).scalar()
            out.append({"origin": origin, "seq": seq, "max_at": max_at,
                        "min_at": low if low is not None else max_at, "format": STATE_FORMAT,
                        "state": blob})
            after = seq
        return out

    def anchor_rows(self) -> list[str]:
        """The origins with a row in ``anchor``: a central store never has one (``ship``
        writes none; retention is a node's), so any is forged or foreign (verify says so)."""
        return [r[0] for r in self._all(select(anchor.c.origin))]

    def truncate_derived(self, origin: str, seq: int) -> None:
        conn = self._writing()
        try:
            conn.execute(snapshot.delete().where(snapshot.c.origin == origin))
            conn.execute(checkpoint.delete().where(checkpoint.c.origin == origin,
                                                   checkpoint.c.seq > seq))
            conn.execute(incident.delete().where(incident.c.origin == origin,
                                                 incident.c.down_seq > seq))
            conn.execute(incident.update().where(incident.c.origin == origin,
                                                 incident.c.up_seq > seq)
                         .values(up_seq=None, up_at=None))
            conn.execute(observer_session.delete().where(observer_session.c.origin == origin,
                                                         observer_session.c.seq > seq))
            conn.execute(witness_head.delete().where(witness_head.c.origin == origin,
                                                     witness_head.c.seq > seq))
        except SQLAlchemyError as e:
            raise self._fail(e, "write") from None

    # -- receiving shipped events -----------------------------------------------------------

    def lock_origin(self, origin: str) -> None:
        """Inside :meth:`write`: one shipper per origin at a time (a second waits, then finds
        the events already there)."""
        if self.postgres:
            self._writing().execute(text("SELECT pg_advisory_xact_lock(hashtext(:o))"),
                                    {"o": origin})

    def append_rows(self, origin: str, rows: list[tuple]) -> None:
        """Stored rows ``(seq, received_us, observer, source, env blob, stdin, hash)`` into
        cluster_event, continuing the central copy of ``origin``'s log, inside :meth:`write`;
        its Merkle tree moves with them (``merkle_head``, same transaction). On PostgreSQL
        through COPY (psycopg 3), several times faster than multi-row INSERTs."""
        if not rows:
            return
        conn = self._writing()
        tree = self._tree_after(origin, rows[0][0] - 1, [bytes(r[6]) for r in rows])
        if tree is not None:
            self.put_tree(origin, rows[-1][0], tree)
        try:
            if self.postgres:
                raw = conn.connection.driver_connection
                assert raw is not None  # a connection in use is never detached from its pool
                with raw.cursor() as cur:
                    with cur.copy(f"COPY cluster_event ({', '.join(_EVENT_COLUMNS)}) "
                                  f"FROM STDIN") as copy:
                        for r in rows:
                            copy.write_row((origin, *r))
                return
            conn.execute(cluster_event.insert(), [
                dict(zip(_EVENT_COLUMNS, (origin, *r), strict=True)) for r in rows])
        except SQLAlchemyError as e:
            raise self._fail(e, "write") from None
        except Exception as e:  # psycopg's own errors, raised through COPY
            raise StoreError(f"cannot write store {mask_url(self.url)}: "
                             f"{first_line(e, self.url)}") from None

    # -- membership alerts: delivery progress (alert_delivery) ------------------------------
    # Kept apart from the log's own tables: see membership_log/alerts.py for what the rows
    # mean. ``ident`` is the incident's down_seq (or its start time when merged).

    def alert_deliveries(self, target: str, origin: str) -> dict[tuple, tuple]:
        """``(node, ident) -> (firing_at, resolved_at)`` of what was delivered to ``target``."""
        from .schema import alert_delivery as d

        rows = self._all(select(d.c.node, d.c.down_seq, d.c.firing_at, d.c.resolved_at)
                         .where(d.c.target == target, d.c.origin == origin))
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def record_alert_deliveries(self, target: str, origin: str, rows: list[tuple]) -> None:
        """Record ``(node, ident, firing_at, resolved_at)`` rows in one transaction; a row
        already there keeps its first ``firing_at``."""
        from .schema import alert_delivery as d

        if not rows:
            return
        insert: Callable[[Any], Any]
        if self.postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:  # the same insert(), with the same on_conflict_do_update
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(d)
        stmt = stmt.on_conflict_do_update(
            index_elements=["target", "origin", "node", "down_seq"],
            set_={"resolved_at": stmt.excluded.resolved_at})
        with self.write() as conn:
            try:
                conn.execute(stmt, [{"target": target, "origin": origin, "node": n,
                                     "down_seq": i, "firing_at": f, "resolved_at": r}
                                    for n, i, f, r in rows])
            except SQLAlchemyError as e:
                raise self._fail(e, "write") from None
