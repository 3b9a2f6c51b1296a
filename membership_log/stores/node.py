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

try:
    # The C module itself: the sqlite3 package around it imports datetime for date adapters
    # this store never uses, which costs the handler about a tenth of a bare start-up.
    import _sqlite3 as sqlite3
except ImportError:  # another Python
    import sqlite3

from ..core import fold as project
from ..core.codec import STATE_FORMAT, decode_state, encode_state
from ..core.errors import NotInitialised, SchemaMismatch, StoreError
from ..core.raw import GENESIS, SOURCE_CATALOG, RawEvent, canonical_env, chain_hash, decode_env
from .protocol import NODE, ROLE_CENTRAL, ROLE_NODE, Anchor  # noqa: F401 (ROLE_CENTRAL)

BUSY_TIMEOUT_S = 10.0

#: The columns this module reads and writes, per table, in the models' order (a test checks
#: them against schema.py).
COLUMNS = {
    "event": ("seq", "received_us", "observer", "source", "env", "stdin", "hash"),
    "event_note": ("seq", "n", "message"),
    "store_info": ("key", "value"),
    "snapshot": ("origin", "seq", "format", "state", "live"),
    "checkpoint": ("origin", "seq", "max_at", "format", "state"),
    "incident": ("origin", "node", "down_seq", "down_at", "cause", "observer", "up_seq",
                 "up_at"),
    "observer_session": ("origin", "seq", "observer", "started_at", "gap_from"),
    "anchor": ("origin", "seq", "hash", "received_us", "max_at", "format", "state"),
    "spool_intake": ("name", "seq"),
}


def _insert(table: str, verb: str = "INSERT") -> str:
    cols = COLUMNS[table]
    return f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


_INSERT_EVENT = _insert("event")
_INSERT_CHECKPOINT = _insert("checkpoint", "INSERT OR REPLACE")
_INSERT_INCIDENT = _insert("incident", "INSERT OR REPLACE")
_INSERT_SESSION = _insert("observer_session", "INSERT OR REPLACE")
_INSERT_SNAPSHOT = _insert("snapshot", "INSERT OR REPLACE")
_EVENT_COLS = ", ".join(COLUMNS["event"])
_INCIDENT_COLS = ", ".join(COLUMNS["incident"][1:])


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _by_start(row: tuple) -> tuple:
    return row[1], row[0]


class NodeStore:
    """An open node store. :meth:`write` gives a write transaction, :meth:`read` a consistent
    read snapshot; both translate ``sqlite3`` errors into :class:`StoreError`."""

    role = ROLE_NODE

    def __init__(self, path: str, timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        if not os.path.exists(path):
            raise StoreError(f"no store at {path} (run: membership init)")
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a writer
            # takes the lock before it reads the last seq, and seq stays gap-free.
            self.conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open store {path}: {_first_line(e)}") from e
        try:
            # WAL is set once at creation and persists in the file.
            self.conn.execute("PRAGMA synchronous=FULL")  # durable on exit 0: ~0.2 ms here
            row = self.conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error as e:
            empty = False
            try:
                empty = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            except sqlite3.Error:
                pass
            self.conn.close()
            if empty:
                raise NotInitialised(f"store {path} is empty (run: membership init)") from e
            if "locked" in str(e) or "busy" in str(e):
                raise StoreError(f"store {path} is locked by another process: "
                                 f"{_first_line(e)}") from e
            raise StoreError(f"{path} is not a membership-log store ({_first_line(e)})") from e
        from ..version import SCHEMA_REVISION

        revision = row[0] if row else None
        if revision != SCHEMA_REVISION:
            self.conn.close()
            raise SchemaMismatch(schema_message(path, revision))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fail(self, e: sqlite3.Error, what: str = "read") -> StoreError:
        text = _first_line(e)
        if "locked" in text or "busy" in text:
            return StoreError(f"store {self.path} is locked by another process ({text}); "
                              f"try again")
        if "readonly" in text.replace("-", "").replace(" ", "") or "read-only" in text:
            return StoreError(f"cannot write store {self.path}: it is read-only ({text})")
        if "no such table" in text:
            return StoreError(f"store {self.path} is damaged: {text} (run: membership rebuild, "
                              f"or restore it from an export)")
        return StoreError(f"cannot {what} store {self.path}: {text}")

    def _one(self, sql: str, params: tuple = ()):
        try:
            return self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as e:
            raise self._fail(e) from e

    def _all(self, sql: str, params: tuple = ()) -> list:
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

    def head(self) -> tuple[int, bytes]:
        """The last event's seq and hash; after a compaction that dropped everything, the
        anchor's."""
        row = self._one("SELECT seq, hash FROM event ORDER BY seq DESC LIMIT 1")
        if row:
            return row[0], row[1]
        a = self.anchor()
        return (a.seq, a.hash) if a is not None else (0, GENESIS)

    def append(self, items: list[tuple]) -> list[int]:
        """Append ``(received_us, observer, source, env_blob, stdin)`` items, inside a write
        transaction. Returns their sequence numbers."""
        return [r[0] for r in self._append(items)]

    def append_raws(self, items: list[tuple]) -> list[RawEvent]:
        """:meth:`append`, returning the events as recorded (to fold them at once)."""
        return [RawEvent(r[0], r[1], r[2], r[3], decode_env(r[4]), r[5], r[6])
                for r in self._append(items)]

    def _append(self, items: list[tuple]) -> list[tuple]:
        seq, prev = self.head()
        rows = []
        for received_us, observer, source, env_blob, stdin in items:
            # The hash covers the canonical (sorted) environment block that verify rebuilds
            # from the variables; store exactly that, whoever built the item.
            env_blob = canonical_env(env_blob)
            seq += 1
            prev = chain_hash(prev, seq, received_us, observer, source, env_blob, stdin)
            rows.append((seq, received_us, observer, source, env_blob, stdin, prev))
        try:
            self.conn.executemany(_INSERT_EVENT, rows)
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e
        return rows

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
        row = self._one("SELECT stdin FROM event WHERE source = 'catalog' ORDER BY seq DESC "
                        "LIMIT 1")
        if row is None:
            a = self.anchor()
            if a is not None:  # compacted away: the anchor's state holds the catalog in force
                return None
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

    def head_seq(self, origin: str = NODE) -> int:
        return self.head()[0]

    def first_seq(self, origin: str = NODE) -> int:
        """The first event kept (1, or the one after the retention anchor)."""
        a = self.anchor()
        return a.seq + 1 if a is not None else 1

    def events(self, origin: str = NODE, after: int = 0, until: int | None = None):
        """Raw events after ``after`` (up to ``until``) in seq order, streamed."""
        if until is None:
            sql, params = (f"SELECT {_EVENT_COLS} FROM event WHERE seq > ? ORDER BY seq",
                           (after,))
        else:
            sql, params = (f"SELECT {_EVENT_COLS} FROM event WHERE seq > ? AND seq <= ? "
                           f"ORDER BY seq", (after, until))
        for r in self._stream(sql, params):
            yield RawEvent(r[0], r[1], r[2], r[3], decode_env(r[4]), r[5], r[6])

    def _stream(self, sql: str, params: tuple):
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

    def rows(self, origin: str = NODE, after: int = 0):
        """Rows after ``after`` exactly as stored ``(seq, received_us, observer, source, env
        blob, stdin, hash)``, streamed (verify checks the hash over the stored blob)."""
        return self._stream(f"SELECT {_EVENT_COLS} FROM event WHERE seq > ? ORDER BY seq",
                            (after,))

    def stored_rows(self, after: int, limit: int) -> list[tuple]:
        """Up to ``limit`` rows after ``after`` exactly as stored (env still encoded)."""
        return self._all(f"SELECT {_EVENT_COLS} FROM event WHERE seq > ? ORDER BY seq LIMIT ?",
                         (after, limit))

    def hashes(self, origin: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """``(seq, hash)`` of events first..last (the reader protocol; origin is NODE)."""
        return self._all("SELECT seq, hash FROM event WHERE seq >= ? AND seq <= ? ORDER BY seq",
                         (first, last))

    def received_at(self, origin: str, seq: int) -> int | None:
        row = self._one("SELECT received_us FROM event WHERE seq = ?", (seq,))
        if row is None:
            a = self.anchor()
            if a is not None and a.seq == seq:
                return a.received_us
        return row[0] if row else None

    def times_after(self, origin: str, after: int):
        """``(seq, received_us)`` of events after ``after``, streamed (time searches)."""
        return self._stream("SELECT seq, received_us FROM event WHERE seq > ? ORDER BY seq",
                            (after,))

    # -- derived state ----------------------------------------------------------------------

    def snapshot(self, origin: str = NODE) -> tuple | None:
        """``(seq, format, state blob, live bytes)`` of the head snapshot, or None."""
        return self._one("SELECT seq, format, state, live FROM snapshot WHERE origin = ?",
                         (origin,))

    def checkpoint_at_or_before(self, origin: str, seq: int) -> tuple | None:
        """``(seq, max_at, State)`` of the latest usable checkpoint (or the anchor) at or
        before ``seq``; None if there is none."""
        return self._checkpoint(origin, "seq", seq) or self._anchor_point(seq)

    def checkpoint_by_time(self, origin: str, us: int) -> tuple | None:
        """``(seq, max_at, State)`` of the latest usable checkpoint whose events were all
        received at or before ``us``."""
        found = self._checkpoint(origin, "max_at", us)
        if found is None:
            a = self.anchor()
            if a is not None and a.max_at <= us:
                return self._anchor_point(a.seq)
        return found

    def _checkpoint(self, origin: str, column: str, bound: int) -> tuple | None:
        # Both columns grow with seq: the latest rows at or below the bound, newest first
        # (a damaged one is skipped: a cache is refolded, never trusted).
        rows = self._all(f"SELECT seq, max_at, format, state FROM checkpoint WHERE origin = ? "
                         f"AND {column} <= ? ORDER BY seq DESC LIMIT 3", (origin, bound))
        for r in rows:
            state = decode_state(r[2], r[3])
            if state is not None and state.seq == r[0]:
                return r[0], r[1], state
        return None

    def checkpoints(self, origin: str = NODE) -> list[tuple]:
        """Every checkpoint as ``(seq, max_at, format, state blob)``."""
        return self._all("SELECT seq, max_at, format, state FROM checkpoint WHERE origin = ? "
                         "ORDER BY seq", (origin,))

    def _anchor_point(self, seq: int) -> tuple | None:
        a = self.anchor()
        if a is None or a.seq > seq:
            return None
        state = decode_state(a.format, a.state)
        if state is None:
            raise StoreError(f"store {self.path}: the retention anchor's state is in another "
                             f"format ({a.format}); this release cannot read before event "
                             f"{a.seq + 1}")
        return a.seq, a.max_at, state

    def incidents(self, origin: str = NODE, since_us: int | None = None,
                  until_us: int | None = None) -> list[tuple]:
        """Incident rows ``(node, down_seq, down_at, cause, observer, up_seq, up_at)`` that
        began at or before ``until_us`` and had not ended before ``since_us``, in the order
        they began."""
        sql = f"SELECT {_INCIDENT_COLS} FROM incident WHERE origin = ?"
        params: list = [origin]
        if until_us is not None:
            sql += " AND down_at <= ?"
            params.append(until_us)
        if since_us is not None:
            sql += " AND (up_at IS NULL OR up_at >= ?)"
            params.append(since_us)
        return self._all(sql + " ORDER BY down_at, node", tuple(params))

    def incident_spans(self, origin: str, since_us: int | None = None,
                       until_us: int | None = None, nodes: tuple = (None, None)) -> list[tuple]:
        """:meth:`incidents` as audits read them, ``(node, down_at, up_at, cause, observer,
        down_seq, up_seq)``, sorted by down_at then node. A window reaching back to the
        start reads the table in key order and sorts here (three times faster than walking
        the time index and looking every row up); a recent window uses the index."""
        cols = "node, down_at, up_at, cause, observer, down_seq, up_seq"
        # ``nodes``: only names in [lo, hi) (None: open), a range of the primary key, so a
        # share of an audit (membership_log.history.bulk) reads only its share.
        lo, hi = nodes
        where = "origin = ?" + (" AND node >= ?" if lo is not None else "") + \
            (" AND node < ?" if hi is not None else "")
        params = (origin,) + ((lo,) if lo is not None else ()) + ((hi,) if hi is not None else ())
        if since_us is None:
            rows = self._all(f"SELECT {cols} FROM incident WHERE {where}", params)
            if until_us is not None:
                rows = [r for r in rows if r[1] <= until_us]
            rows.sort(key=_by_start)
            return rows
        return self._all(f"SELECT {cols} FROM incident WHERE {where} AND down_at <= ? AND "
                         f"(up_at IS NULL OR up_at >= ?) ORDER BY down_at, node",
                         params + (until_us if until_us is not None else 2**63 - 1, since_us))

    def incident_totals(self, origin: str, now_us: int) -> list[tuple]:
        """Per node and cause: ``(node, cause, incidents, downtime µs, last change µs)``,
        open incidents counted up to ``now_us`` (metrics)."""
        return self._all(
            "SELECT node, cause, count(*), sum(max(0, coalesce(up_at, ?) - down_at)), "
            "max(max(down_at, coalesce(up_at, down_at))) FROM incident WHERE origin = ? "
            "GROUP BY node, cause", (now_us, origin))

    def sessions(self, origin: str = NODE) -> list[tuple]:
        """``(seq, observer, started_at, gap_from)`` of every observer session."""
        return self._all("SELECT seq, observer, started_at, gap_from FROM observer_session "
                         "WHERE origin = ? ORDER BY seq", (origin,))

    def anchor(self, origin: str = NODE):
        row = self._one("SELECT seq, hash, received_us, max_at, format, state FROM anchor "
                        "WHERE origin = ?", (origin,))
        return None if row is None else Anchor(*row)

    def write_derived(self, origin: str, batch) -> None:
        """Store a :class:`membership_log.history.driver.Batch` (inside a write transaction)."""
        c = self.conn
        try:
            if batch.checkpoints:
                c.executemany(_INSERT_CHECKPOINT,
                              [(origin, s, m, STATE_FORMAT, b) for s, m, b in batch.checkpoints])
            if batch.closed:  # first: the batch's own new incidents are open too
                c.executemany("UPDATE incident SET up_seq = ?, up_at = ? WHERE origin = ? AND "
                              "node = ? AND up_seq IS NULL",
                              [(us, ua, origin, n) for n, us, ua in batch.closed])
            if batch.incidents:
                c.executemany(_INSERT_INCIDENT, [(origin, *i) for i in batch.incidents])
            if batch.sessions:
                c.executemany(_INSERT_SESSION, [(origin, *s) for s in batch.sessions])
            if batch.snapshot is not None:
                seq, blob, live = batch.snapshot
                c.execute(_INSERT_SNAPSHOT, (origin, seq, STATE_FORMAT, blob, live))
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

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
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    def drop_through(self, seq: int, hash_: bytes, received_us: int,
                     state: project.State) -> int:
        """Move the anchor to event ``seq`` and drop the events up to it (inside a write
        transaction: the delete guard lets only events at or below the anchor go). Derived
        incidents and sessions stay: counters and audits of later times must not change;
        so do the names of spool files taken in (a leftover file is never taken in twice).
        Returns how many events were dropped."""
        c = self.conn
        try:
            c.execute(_insert("anchor", "INSERT OR REPLACE"),
                      (NODE, seq, hash_, received_us, state.max_at, STATE_FORMAT,
                       encode_state(state)))
            dropped = c.execute("DELETE FROM event WHERE seq <= ?", (seq,)).rowcount
            c.execute("DELETE FROM event_note WHERE seq <= ?", (seq,))
            c.execute("DELETE FROM checkpoint WHERE origin = ? AND seq <= ?", (NODE, seq))
            return dropped
        except sqlite3.Error as e:
            raise self._fail(e, "write") from e

    # -- membership alerts: delivery progress (alert_delivery) ------------------------------
    # Kept apart from the log's own tables: see membership_log/alerts.py for what the rows
    # mean. ``ident`` is the incident's down_seq (or its start time when merged).

    def alert_deliveries(self, target: str, origin: str = NODE) -> dict[tuple, tuple]:
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
                 problem: str | None = None):
    """The catalog event to record just before the event received at ``at``, if the file's
    bytes (read before the write transaction, with ``files.read_regular``: ``problem`` says
    why there are none) differ from the last catalog recorded; call inside the transaction.

    A catalog that goes missing or unusable after one was recorded is recorded once as
    empty: the log shows when, and the fold keeps the last good one. A missing file with no
    catalog ever is allowed (members are the nodes) and records nothing; but something
    unusable at the path (a FIFO, a device, a file over the size limit) is recorded once,
    as empty, so the log and its one warning say so."""
    last = store.last_catalog()
    if data is None:
        if last is None and problem:
            return (at, observer, SOURCE_CATALOG, b"", b"")
        if not last:
            return None
        data = b""
    if data == last:
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

    def __exit__(self, exc_type, exc, tb) -> None:
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
