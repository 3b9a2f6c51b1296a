"""A node store: one node's own log in SQLite, through the stdlib ``sqlite3``.

The role a node's store plays: its handler appends here (the hot path: importing SQLAlchemy
alone costs ~13x the handler's whole budget), and every read command on a node store reads
here too, so that ``state --at`` on a node costs Python, Typer and a few queries. The tables
belong to :mod:`membership_log.stores.schema` (SQLAlchemy models, Alembic migrations); this module
only names their columns (:data:`COLUMNS`, held to the models by a test) and refuses a store
at any revision other than :data:`~membership_log.version.SCHEMA_REVISION`.

Every ``sqlite3`` error is translated here, where it arises, into one :class:`StoreError` line.
"""

from __future__ import annotations

import os
import time

from ..core.codec import STATE_FORMAT, decode_anchor_state, decode_state
from ..core.errors import NotInitialised, SchemaMismatch, StoreError
from ..core.raw import (
    GENESIS,
    SOURCE_CATALOG,
    RawEvent,
    canonical_env,
    chain_hash,
    raw_of_row,
    sha256,
)
from . import files, queries
from .protocol import NODE, ROLE_NODE, Anchor, Scope, Store

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:  # the same API, under the name its stubs give it
    import sqlite3
    from collections.abc import Iterator
    from typing import Any
else:
    try:
        # The C module itself: the sqlite3 package around it imports datetime for date
        # adapters this store never uses, which costs the handler about a tenth of a bare
        # start-up.
        import _sqlite3 as sqlite3
    except ImportError:  # another Python
        import sqlite3

BUSY_TIMEOUT_S = 10.0

#: The columns this module reads and writes, per table, in the models' order (a test checks
#: them against schema.py).
COLUMNS = {
    "event": ("seq", "received_us", "observer", "source", "env", "stdin", "hash"),
    "event_note": ("seq", "n", "message"),
    "store_info": ("key", "value"),
    "snapshot": ("origin", "seq", "format", "state", "live"),
    "checkpoint": ("origin", "seq", "max_at", "min_at", "format", "state"),
    "incident": ("origin", "node", "down_seq", "down_at", "cause", "observer", "up_seq",
                 "up_at"),
    "observer_session": ("origin", "seq", "observer", "started_at", "gap_from"),
    "anchor": ("origin", "seq", "hash", "received_us", "max_at", "format", "state",
               "catalog_sha256", "frontier"),
    "merkle_head": ("origin", "size", "frontier"),
    "witness_head": ("origin", "seq", "received_us", "observer", "head_origin", "size", "root",
                     "conflict"),
    "spool_intake": ("name", "seq"),
}


def _insert(table: str, verb: str = "INSERT") -> str:
    cols = COLUMNS[table]
    return f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


_INSERT_EVENT = _insert("event")
_INSERT_CHECKPOINT = _insert("checkpoint", "INSERT OR REPLACE")
# Incident rows come in membership_log.core.incidents.Row order, like every incident row.
_INSERT_INCIDENT = ("INSERT OR REPLACE INTO incident (origin, node, down_at, up_at, cause, "
                    "observer, down_seq, up_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_SESSION = _insert("observer_session", "INSERT OR REPLACE")
_INSERT_SNAPSHOT = _insert("snapshot", "INSERT OR REPLACE")
_INSERT_TREE = _insert("merkle_head", "INSERT OR REPLACE")
_INSERT_HEAD = _insert("witness_head", "INSERT OR REPLACE")
_HEAD_COLS = ", ".join(COLUMNS["witness_head"])
_EVENT_COLS = ", ".join(COLUMNS["event"])
_MIN_RECEIVED = queries.MIN_RECEIVED.format(table="event", origin="")


#: SQLite's words for SQLITE_READONLY_*: a group reader that cannot find or set up the -wal
#: and -shm files (they are missing for a moment, or need a recovery only a writer may run).
_READ_ONLY_WAL = "attempt to write a readonly database"
#: Pauses between attempts to open a group-readable store in that state (0.3 s in all).
_RETRIES = (0.01, 0.02, 0.04, 0.08, 0.15)


class _Transient(Exception):
    """Opening a group-readable store met a moment that passes (see :data:`_RETRIES`)."""


def _denied(path: str, action: str = "read") -> str | None:
    """:func:`membership_log.stores.access.denied`, loaded only to word an error."""
    from . import access

    return access.denied(path, action)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class NodeStore(Store):
    """An open node store. :meth:`write` gives a write transaction, :meth:`read` a consistent
    read snapshot; both translate ``sqlite3`` errors into :class:`StoreError`."""

    role = ROLE_NODE

    def __init__(self, path: str, timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = self.label = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise StoreError(f"no store at {path} (run: membership init)") from None
        except OSError as e:  # a directory on the way this user may not search
            raise StoreError(_denied(path) or f"cannot open store {path}: "
                             f"{e.strerror or e}") from None
        #: A group-readable store: its readers need the -wal and -shm files kept (close()).
        self._shared = st if files.is_shared(st) else None
        for pause in _RETRIES:
            try:
                row = self._connect(timeout)
                break
            except _Transient:
                # A group reader that met the moment a writer's close removed -wal/-shm,
                # or a recovery it may not run: the writer puts them back at once.
                time.sleep(pause)
        else:
            row = self._connect(timeout, last=True)
        from ..version import SCHEMA_REVISION

        revision = row[0] if row else None
        if revision != SCHEMA_REVISION:
            self.close()
            raise SchemaMismatch(schema_message(path, revision))

    def _connect(self, timeout: float, last: bool = False) -> tuple | None:
        """Open the connection and read the schema revision (the first read of the file)."""
        path = self.path
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a writer
            # takes the lock before it reads the last seq, and seq stays gap-free.
            self.conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(_denied(path) or f"cannot open store {path}: "
                             f"{_first_line(e)}") from e
        try:
            # WAL is set once at creation and persists in the file.
            self.conn.execute("PRAGMA synchronous=FULL")  # durable on exit 0: ~0.2 ms here
            return self.conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error as e:
            empty = False
            try:
                empty = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            except sqlite3.Error:
                pass
            self.close()
            if empty:
                raise NotInitialised(f"store {path} is empty (run: membership init)") from e
            text = _first_line(e)
            if "locked" in text or "busy" in text:
                raise StoreError(f"store {path} is locked by another process: {text}") from e
            if _READ_ONLY_WAL in text or "unable to open" in text:
                if not last and self._shared is not None and os.access(path, os.R_OK):
                    raise _Transient() from e
                why = _denied(path)
                if why is not None:
                    raise StoreError(why) from e
                raise StoreError(f"cannot open store {path}: {text}") from e
            raise StoreError(f"{path} is not a membership-log store ({text})") from e

    def close(self) -> None:
        self.conn.close()
        if self._shared is not None:
            from . import access  # a shared store only: off the usual hot path

            access.keep_wal_files(self.path, self._shared)

    def _fail(self, e: sqlite3.Error, what: str = "read") -> StoreError:
        text = _first_line(e)
        if "locked" in text or "busy" in text:
            return StoreError(f"store {self.path} is locked by another process ({text}); "
                              f"try again")
        if "readonly" in text.replace("-", "").replace(" ", "") or "read-only" in text:
            why = _denied(self.path, what if what == "write" else "read")
            if why is not None:
                return StoreError(why)
            if what != "write":  # a group reader that met a writer's recovery: it passes
                return StoreError(f"cannot read store {self.path} just now ({text}); try "
                                  f"again")
            return StoreError(f"cannot write store {self.path}: it is read-only ({text})")
        if "unable to open" in text:
            why = _denied(self.path, what)
            if why is not None:
                return StoreError(why)
        if "no such table" in text:
            return StoreError(f"store {self.path} is damaged: {text} (run: membership rebuild, "
                              f"or restore it from an export)")
        return StoreError(f"cannot {what} store {self.path}: {text}")

    def _one(self, sql: str, params: tuple | dict = ()) -> Any:
        try:
            return self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as e:
            raise self._fail(e) from e

    def _all(self, sql: str, params: tuple | dict = ()) -> list:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._fail(e) from e

    def write(self) -> _Transaction:
        return _Transaction(self, "BEGIN IMMEDIATE")

    def read(self) -> _Transaction:
        """One consistent view of the store for several queries (WAL snapshot)."""
        return _Transaction(self, "BEGIN")

    def role_of(self) -> str:
        row = self._one("SELECT value FROM store_info WHERE key = 'role'")
        return row[0] if row else ROLE_NODE

    # -- the raw log ------------------------------------------------------------------------

    def _check(self, origin: str) -> None:
        if origin != NODE:
            raise StoreError(f"store {self.path} is a node store: it holds no log of "
                             f"{origin!r} (its own log is origin {NODE!r})")

    def head(self, origin: str) -> tuple[int, bytes]:
        self._check(origin)
        row = self._one("SELECT seq, hash FROM event ORDER BY seq DESC LIMIT 1")
        if row:
            return row[0], row[1]
        a = self.anchor(NODE)
        return (a.seq, a.hash) if a is not None else (0, GENESIS)

    def append(self, items: list[tuple]) -> list[int]:
        """Append ``(received_us, observer, source, env_blob, stdin)`` items, inside a write
        transaction. Returns their sequence numbers."""
        return [r[0] for r in self._append(items)]

    def append_raws(self, items: list[tuple]) -> list[RawEvent]:
        """:meth:`append`, returning the events as recorded (to fold them at once)."""
        return list(map(raw_of_row, self._append(items)))

    def _append(self, items: list[tuple]) -> list[tuple]:
        first, prev = self.head(NODE)
        seq = first
        rows = []
        for received_us, observer, source, env_blob, stdin in items:
            # The hash covers the canonical (sorted) environment block that verify rebuilds
            # from the variables; store exactly that, whoever built the item.
            env_blob = canonical_env(env_blob)
            seq += 1
            prev = chain_hash(prev, seq, received_us, observer, source, env_blob, stdin)
            rows.append((seq, received_us, observer, source, env_blob, stdin, prev))
        # The Merkle tree moves with the log, in the same transaction (SPEC "Witnessed
        # history"): the frontier, a hash or two per event, never the whole tree.
        tree = self._tree_after(NODE, first, [r[6] for r in rows])
        try:
            self.conn.executemany(_INSERT_EVENT, rows)
            if tree is not None:
                self.conn.execute(_INSERT_TREE, (NODE, seq, tree))
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e
        return rows

    # -- the Merkle tree ---------------------------------------------------------------------

    def tree(self, origin: str) -> tuple[int, bytes] | None:
        self._check(origin)
        return self._one("SELECT size, frontier FROM merkle_head WHERE origin = ?", (origin,))

    def put_tree(self, origin: str, size: int, frontier: bytes) -> None:
        self._check(origin)
        try:
            self.conn.execute(_INSERT_TREE, (origin, size, frontier))
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    def witnessed_heads(self, head_origin: str | None = None, after: int = -1,
                        through: int | None = None, log: str | None = None) -> list[tuple]:
        where = ["size > ?"]
        params: list[object] = [after]
        if head_origin is not None:
            where.append("head_origin = ?")
            params.append(head_origin)
        if through is not None:
            where.append("size <= ?")
            params.append(through)
        if log is not None:
            where.append("origin = ?")
            params.append(log)
        return self._all(f"SELECT {_HEAD_COLS} FROM witness_head WHERE {' AND '.join(where)} "
                         f"ORDER BY head_origin, size, origin, seq", tuple(params))

    def taken_in(self, names: list[str]) -> set[str]:
        """Which of these spool files were already taken in."""
        found: set[str] = set()
        for i in range(0, len(names), 500):
            chunk = names[i:i + 500]
            found.update(r[0] for r in self._all(
                f"SELECT name FROM spool_intake WHERE name IN ({', '.join('?' * len(chunk))})",
                tuple(chunk)))
        return found

    def record_intake(self, pairs: list[tuple[str, int]]) -> None:
        """Spool file names and the seqs their events got (same transaction as the append)."""
        try:
            self.conn.executemany("INSERT OR IGNORE INTO spool_intake (name, seq) VALUES (?, ?)",
                                  pairs)
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    def last_catalog(self) -> bytes | None:
        # source != 'serf' names the partial index ix_event_records (catalogs and anchors).
        row = self._one("SELECT stdin FROM event WHERE source != 'serf' AND "
                        "source = 'catalog' ORDER BY seq DESC LIMIT 1")
        return row[0] if row else None

    def origin_name(self) -> str | None:
        """The node this store records for: the observer of its latest event that has one."""
        row = self._one("SELECT observer FROM event WHERE observer != '' ORDER BY seq DESC "
                        "LIMIT 1")
        return row[0] if row else None

    def add_notes(self, seq: int, messages: list[str]) -> None:
        from ..core.raw import text_of

        try:
            self.conn.executemany(
                "INSERT OR IGNORE INTO event_note (seq, n, message) VALUES (?, ?, ?)",
                [(seq, n, text_of(m)) for n, m in enumerate(messages)])
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    # -- reading the log (the reader protocol; ``origin`` is always NODE here) --------------

    def origins(self) -> list[str]:
        return [NODE]

    def scope(self, observer: str | None) -> Scope:
        return Scope([NODE], False, observer)

    def first_seq(self, origin: str) -> int:
        a = self.anchor(origin)
        return a.seq + 1 if a is not None else 1

    def events(self, origin: str, after: int = 0,
               until: int | None = None) -> Iterator[RawEvent]:
        return map(raw_of_row, self.rows(origin, after, until))

    def rows(self, origin: str, after: int = 0, until: int | None = None) -> Iterator[tuple]:
        self._check(origin)
        if until is None:
            return self._stream(f"SELECT {_EVENT_COLS} FROM event WHERE seq > ? ORDER BY seq",
                                (after,))
        return self._stream(f"SELECT {_EVENT_COLS} FROM event WHERE seq > ? AND seq <= ? "
                            f"ORDER BY seq", (after, until))

    def _stream(self, sql: str, params: tuple) -> Iterator[tuple]:
        """A query's rows, fetched in blocks: a log of a million events never sits in
        memory at once."""
        try:
            cur = self.conn.execute(sql, params)
            while True:
                rows = cur.fetchmany(2000)
                if not rows:
                    return
                yield from rows
        except sqlite3.Error as e:
            raise self._fail(e) from e

    def stored_rows(self, after: int, limit: int) -> list[tuple]:
        """Up to ``limit`` rows after ``after`` exactly as stored (env still encoded)."""
        return self._all(f"SELECT {_EVENT_COLS} FROM event WHERE seq > ? ORDER BY seq LIMIT ?",
                         (after, limit))

    def hashes(self, origin: str, first: int, last: int) -> list[tuple[int, bytes]]:
        self._check(origin)
        return self._all("SELECT seq, hash FROM event WHERE seq >= ? AND seq <= ? ORDER BY seq",
                         (first, last))

    def received_at(self, origin: str, seq: int) -> int | None:
        self._check(origin)
        row = self._one("SELECT received_us FROM event WHERE seq = ?", (seq,))
        if row is None:
            a = self.anchor(origin)
            if a is not None and a.seq == seq:
                return a.received_us
        return row[0] if row else None

    def last_received_by(self, origin: str, us: int, after: int, until: int) -> int | None:
        self._check(origin)
        row = self._one("SELECT max(seq) FROM event WHERE seq > ? AND seq <= ? AND "
                        "received_us <= ?", (after, until, us))
        return row[0] if row else None

    def latest_anchors(self, origin: str) -> list:
        self._check(origin)
        return self._all("SELECT seq, stdin FROM event WHERE source != 'serf' AND "
                         "source = 'anchor' ORDER BY seq DESC LIMIT 8")

    # -- derived state ----------------------------------------------------------------------

    def snapshot(self, origin: str) -> tuple | None:
        return self._one("SELECT seq, format, state, live FROM snapshot WHERE origin = ?",
                         (origin,))

    def checkpoint_at_or_before(self, origin: str, seq: int) -> tuple | None:
        # The latest rows at or below the bound, newest first (a damaged one is skipped: a
        # cache is refolded, never trusted).
        rows = self._all("SELECT seq, max_at, format, state FROM checkpoint WHERE origin = ? "
                         "AND seq <= ? ORDER BY seq DESC LIMIT 3", (origin, seq))
        for r in rows:
            state = decode_state(r[2], r[3])
            if state is not None and state.seq == r[0]:
                return r[0], r[1], state
        return self._anchor_point(origin, seq)

    def _anchor_point(self, origin: str, seq: int) -> tuple | None:
        a = self.anchor(origin)
        if a is None or a.seq > seq:
            return None
        return a.seq, a.max_at, decode_anchor_state(a, self.path)

    def stretch_received_by(self, origin: str, us: int) -> tuple[int, int] | None:
        row = self._one(queries.STRETCH, {"origin": origin, "us": us})
        if row is None:
            return None
        prev = self._one(queries.PREVIOUS_CHECKPOINT, {"origin": origin, "seq": row[0]})
        if prev is not None and prev[0] is not None:
            return prev[0], row[0]
        a = self.anchor(origin)
        return (a.seq if a is not None else 0), row[0]

    def last_checkpoint(self, origin: str) -> tuple[int, int | None]:
        row = self._one(queries.LAST_CHECKPOINT, {"origin": origin})
        if row is not None:
            return row[0], row[1]
        a = self.anchor(origin)
        return (a.seq if a is not None else 0), None

    def checkpoints(self, origin: str) -> list[tuple]:
        return self._all("SELECT seq, max_at, min_at, format, state FROM checkpoint WHERE "
                         "origin = ? ORDER BY seq", (origin,))

    def incidents(self, origin: str, since_us: int | None = None,
                  until_us: int | None = None, nodes: tuple = (None, None),
                  by_node: bool = False) -> list[tuple]:
        sql, params, post = queries.incidents(since_us, until_us, nodes, by_node)
        params["origin"] = origin
        return queries.finish_incidents(self._all(sql, params), until_us, post)

    def sessions(self, origin: str) -> list[tuple]:
        return self._all("SELECT seq, observer, started_at, gap_from FROM observer_session "
                         "WHERE origin = ? ORDER BY seq", (origin,))

    def anchor(self, origin: str) -> Anchor | None:
        row = self._one("SELECT seq, hash, received_us, max_at, format, state, catalog_sha256, "
                        "frontier FROM anchor WHERE origin = ?", (origin,))
        return None if row is None else Anchor(*row)

    def write_derived(self, origin: str, batch: Any) -> None:  # a history.driver.Batch
        """Store a :class:`membership_log.history.driver.Batch` (inside a write transaction)."""
        c = self.conn
        try:
            if batch.checkpoints:
                c.executemany(_INSERT_CHECKPOINT, self._with_min_at(origin, batch.checkpoints))
            if batch.closed:  # first: the batch's own new incidents are open too
                c.executemany("UPDATE incident SET up_seq = ?, up_at = ? WHERE origin = ? AND "
                              "node = ? AND up_seq IS NULL",
                              [(us, ua, origin, n) for n, us, ua in batch.closed])
            if batch.incidents:
                c.executemany(_INSERT_INCIDENT, [(origin, *i) for i in batch.incidents])
            if batch.sessions:
                c.executemany(_INSERT_SESSION, [(origin, *s) for s in batch.sessions])
            if batch.heads:
                c.executemany(_INSERT_HEAD, [(origin, *h) for h in batch.heads])
            if batch.snapshot is not None:
                seq, blob, live = batch.snapshot
                c.execute(_INSERT_SNAPSHOT, (origin, seq, STATE_FORMAT, blob, live))
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    def _with_min_at(self, origin: str, checkpoints: list) -> list[tuple]:
        """Checkpoint rows with the earliest receive time of the events since the previous
        checkpoint (this transaction sees the events being folded)."""
        out = []
        after = None
        for seq, max_at, blob in checkpoints:
            if after is None:
                row = self._one(queries.PREVIOUS_CHECKPOINT, {"origin": origin, "seq": seq})
                after = row[0] if row and row[0] is not None else self.first_seq(origin) - 1
            low = self._one(_MIN_RECEIVED, {"after": after, "through": seq})
            min_at = low[0] if low and low[0] is not None else max_at
            out.append((origin, seq, max_at, min_at, STATE_FORMAT, blob))
            after = seq
        return out

    def truncate_derived(self, origin: str, seq: int) -> None:
        """Make the derived rows say exactly what the fold knew after event ``seq`` (inside
        a write transaction): later checkpoints, incidents and sessions go, incidents closed
        later are open again, the snapshot goes."""
        c = self.conn
        try:
            c.execute("DELETE FROM snapshot WHERE origin = ?", (origin,))
            c.execute("DELETE FROM checkpoint WHERE origin = ? AND seq > ?", (origin, seq))
            c.execute("DELETE FROM incident WHERE origin = ? AND down_seq > ?", (origin, seq))
            c.execute("UPDATE incident SET up_seq = NULL, up_at = NULL WHERE origin = ? AND "
                      "up_seq > ?", (origin, seq))
            c.execute("DELETE FROM observer_session WHERE origin = ? AND seq > ?", (origin, seq))
            c.execute("DELETE FROM witness_head WHERE origin = ? AND seq > ?", (origin, seq))
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    def drop_through(self, anchor: Anchor) -> int:
        """Move the anchor to ``anchor`` and drop the events up to it (inside a write
        transaction: the delete guard lets only events at or below the anchor go). Derived
        incidents, sessions and witnessed heads stay: counters and audits of later times must
        not change, and the heads stay what central verification holds logs to;
        so do the names of spool files taken in (a leftover file is never taken in twice).
        The caller records the anchor in the log in the same transaction. Returns how many
        events were dropped."""
        c = self.conn
        try:
            c.execute(_insert("anchor", "INSERT OR REPLACE"), (NODE, *anchor))
            dropped = c.execute("DELETE FROM event WHERE seq <= ?", (anchor.seq,)).rowcount
            c.execute("DELETE FROM event_note WHERE seq <= ?", (anchor.seq,))
            c.execute("DELETE FROM checkpoint WHERE origin = ? AND seq <= ?",
                      (NODE, anchor.seq))
            # The first checkpoint kept now starts its stretch at the anchor.
            c.execute("UPDATE checkpoint SET min_at = coalesce((SELECT min(received_us) FROM "
                      "event WHERE seq > ? AND seq <= checkpoint.seq), min_at) WHERE origin = ? "
                      "AND seq = (SELECT min(seq) FROM checkpoint WHERE origin = ?)",
                      (anchor.seq, NODE, NODE))
            return dropped
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    def set_anchor_catalog(self, digest: bytes) -> Anchor:
        """Give an anchor made before 0005 (which kept no catalog digest) the digest of the
        catalog in force (inside a write transaction); the anchor as it is now."""
        try:
            self.conn.execute("UPDATE anchor SET catalog_sha256 = ? WHERE origin = ?",
                              (digest, NODE))
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e
        anchor = self.anchor(NODE)
        assert anchor is not None  # callers hold one (the row just updated)
        return anchor

    def range_stats(self, after: int, through: int) -> tuple[int, int | None, int | None, int]:
        """``(events, first receive time, last receive time, bytes)`` of events
        ``after+1..through`` (what a compaction would drop)."""
        row = self._one("SELECT count(*), min(received_us), max(received_us), "
                        "coalesce(sum(length(env) + length(stdin) + length(hash) + "
                        "length(observer) + 32), 0) FROM event WHERE seq > ? AND seq <= ?",
                        (after, through))
        return row[0], row[1], row[2], row[3]

    def catalog_digest(self, through: int) -> bytes | None:
        """The SHA-256 of the last catalog recorded at or before event ``through`` (the
        anchor's, if the log was compacted past every catalog event), or None."""
        row = self._one("SELECT stdin FROM event WHERE source != 'serf' AND "
                        "source = 'catalog' AND seq <= ? ORDER BY seq DESC LIMIT 1", (through,))
        if row is not None:
            return sha256(row[0]).digest()
        a = self.anchor(NODE)
        return a.catalog_sha256 if a is not None else None

    # -- membership alerts: delivery progress (alert_delivery) ------------------------------
    # Kept apart from the log's own tables: see membership_log/alerts.py for what the rows
    # mean. ``ident`` is the incident's down_seq (or its start time when merged).

    def alert_deliveries(self, target: str, origin: str) -> dict[tuple, tuple]:
        """``(node, ident) -> (firing_at, resolved_at)`` of what was delivered to ``target``."""
        rows = self._all("SELECT node, down_seq, firing_at, resolved_at FROM alert_delivery "
                         "WHERE target = ? AND origin = ?", (target, origin))
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def record_alert_deliveries(self, target: str, origin: str, rows: list[tuple]) -> None:
        """Record ``(node, ident, firing_at, resolved_at)`` rows in one short write
        transaction; a row already there keeps its first ``firing_at``."""
        with self.write() as c:
            try:
                c.executemany(
                    "INSERT INTO alert_delivery (target, origin, node, down_seq, firing_at, "
                    "resolved_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (target, origin, node, "
                    "down_seq) DO UPDATE SET resolved_at = excluded.resolved_at",
                    [(target, origin, *r) for r in rows])
            except sqlite3.Error as e:
                raise self._fail(e, "write") from e


def catalog_item(store: NodeStore, data: bytes | None, at: int, observer: str,
                 problem: str | None = None) -> tuple[int, str, str, bytes, bytes] | None:
    """The catalog event to record just before the event received at ``at``, if the file's
    bytes (read before the write transaction, with ``files.read_regular``: ``problem`` says
    why there are none) differ from the catalog in force; call inside the transaction.

    The catalog in force is the last one recorded, or, if a compaction dropped every
    catalog event, the one whose digest the retention anchor keeps. One that goes missing
    or unusable after one was recorded is recorded once as empty: the log shows when, and
    the fold keeps the last good one. A missing file with no catalog ever is allowed
    (members are the nodes) and records nothing; but something unusable at the path (a
    FIFO, a device, a file over the size limit) is recorded once, as empty, so the log and
    its one warning say so."""
    last = store.last_catalog()
    if last is not None:
        same = (lambda new: new == last)  # noqa: E731
        known, empty = True, not last
    else:
        a = store.anchor(NODE)
        digest = a.catalog_sha256 if a is not None else None
        same = (lambda new: digest is not None and sha256(new).digest() == digest)  # noqa: E731
        known = digest is not None
        empty = not known or digest == sha256(b"").digest()
    if data is None:
        if not known and problem:
            return (at, observer, SOURCE_CATALOG, b"", b"")
        if empty:
            return None
        data = b""
    if same(data):
        return None
    return (at, observer, SOURCE_CATALOG, b"", data)


def schema_message(where: str, revision: str | None) -> str:
    """Why a store at ``revision`` cannot be used, and what to do about it."""
    from ..version import SCHEMA_REVISION

    if revision is not None and revision.isdigit() and revision < SCHEMA_REVISION:
        return (f"store {where} is at schema revision {revision}, this release uses "
                f"{SCHEMA_REVISION} (run: membership db upgrade)")
    return (f"store {where} is at schema revision {revision!r}, newer than this release's "
            f"{SCHEMA_REVISION}: it was written by a newer membership-log; upgrade "
            f"membership-log (pip install -U membership-log) rather than the store")


class _Transaction:
    """``BEGIN [IMMEDIATE]`` ... ``COMMIT`` (rollback on error), errors translated."""

    def __init__(self, store: NodeStore, begin: str) -> None:
        self.store = store
        self.begin = begin

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.store.conn.execute(self.begin)
        except sqlite3.Error as e:
            raise self.store._fail(e, "write" if "IMMEDIATE" in self.begin else "read") from e
        return self.store.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        conn = self.store.conn
        if exc_type is None:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise self.store._fail(e, "write") from e
        else:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
