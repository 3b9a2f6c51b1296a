"""The local SQLite store through stdlib ``sqlite3``: the handler's hot path.

The tables belong to :mod:`membership_log.schema` (SQLAlchemy models, Alembic migrations);
this module only reads and writes rows, and refuses a store at any revision other than
:data:`~membership_log.version.SCHEMA_REVISION`. It exists because importing SQLAlchemy
costs ~190 ms, while the whole handler run must stay near the interpreter's ~14 ms start-up.

:func:`catch_up` is the one place derived state is brought up to date: load the snapshot,
fold the raw events after it with :func:`membership_log.project.step`, store the snapshot,
rewrite the live file if its bytes change. The handler, ``init`` and ``rebuild`` all call it.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import sys
from collections import namedtuple

from . import events, livefile, project
from .errors import NotInitialised, SchemaMismatch, StoreError
from .raw import GENESIS, RawEvent, chain_hash, decode_env, encode_env
from .version import SCHEMA_REVISION

#: Snapshots are a cache: one written by another Python (marshal may differ) or another state
#: shape is ignored and the log refolded. Bump the trailing number when ``State`` changes.
SNAPSHOT_FORMAT = f"marshal4/py{sys.version_info[0]}.{sys.version_info[1]}/1"
HEAD = "head"

#: A checkpoint of the fold's state after every this-many events (see schema.checkpoint):
#: closer together while the state is small (a few hundred bytes each), so that state --at
#: folds fewer events; farther apart for large clusters, whose state is ~80 bytes a member.
CHECKPOINT_EVERY = 1000
CHECKPOINT_EVERY_SMALL = 250
SMALL_STATE_MEMBERS = 200

#: An event row exactly as stored (``env_blob`` still NUL-joined), for copying elsewhere.
StoredRow = namedtuple("StoredRow", "seq received_us observer source env_blob stdin hash")

BUSY_TIMEOUT_S = 10.0


class Journal:
    """An open SQLite store. Use :meth:`write` for a write transaction."""

    def __init__(self, path: str, timeout: float = BUSY_TIMEOUT_S) -> None:
        if not os.path.exists(path):
            raise StoreError(f"no store at {path} (run: membership init)")
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a writer
            # takes the lock before it reads the last seq, and seq stays gap-free.
            self.conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            # WAL is set once by `init` and persists in the file (0.7 ms to ask each time).
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
            raise StoreError(f"cannot open store {path}: {e}") from e
        revision = row[0] if row else None
        if revision != SCHEMA_REVISION:
            self.conn.close()
            raise SchemaMismatch(
                f"store {path} is at schema revision {revision!r}, this release writes "
                f"{SCHEMA_REVISION!r} (run: membership db upgrade)"
            )
        self.path = path

    def close(self) -> None:
        self.conn.close()

    def write(self) -> _Transaction:
        return _Transaction(self.conn)

    # -- the raw log ------------------------------------------------------------------------

    def head(self) -> tuple[int, bytes]:
        row = self.conn.execute("SELECT seq, hash FROM event ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def append(self, items: list[tuple]) -> list[int]:
        """Append ``(received_us, observer, source, env_blob, stdin)`` items, in a write
        transaction. Returns their sequence numbers."""
        seq, prev = self.head()
        seqs = []
        rows = []
        for received_us, observer, source, env_blob, stdin in items:
            # The hash covers the canonical (sorted) environment block that verify rebuilds
            # from the variables; store exactly that, whoever built the item.
            env_blob = encode_env(decode_env(env_blob))
            seq += 1
            prev = chain_hash(prev, seq, received_us, observer, source, env_blob, stdin)
            rows.append((seq, received_us, observer, source, env_blob, stdin, prev))
            seqs.append(seq)
        self.conn.executemany(
            "INSERT INTO event (seq, received_us, observer, source, env, stdin, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return seqs

    def origin(self) -> str | None:
        """The node this store records for: the observer of its latest event that has one."""
        row = self.conn.execute(
            "SELECT observer FROM event WHERE observer != '' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def hash_at(self, seq: int) -> bytes | None:
        row = self.conn.execute("SELECT hash FROM event WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    def raw_range(self, after: int, limit: int) -> list:
        """Up to ``limit`` rows after ``after``, as stored (env still encoded)."""
        cur = self.conn.execute(
            "SELECT seq, received_us, observer, source, env, stdin, hash FROM event"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [StoredRow(*r) for r in cur]

    def last_catalog(self) -> bytes | None:
        row = self.conn.execute(
            "SELECT stdin FROM event WHERE source = 'catalog' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def raw_after(self, seq: int) -> list[RawEvent]:
        cur = self.conn.execute(
            "SELECT seq, received_us, observer, source, env, stdin, hash FROM event"
            " WHERE seq > ? ORDER BY seq",
            (seq,),
        )
        return [RawEvent(r[0], r[1], r[2], r[3], decode_env(r[4]), r[5], r[6]) for r in cur]

    def add_notes(self, seq: int, messages: list[str]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO event_note (seq, n, message) VALUES (?, ?, ?)",
            [(seq, n, m) for n, m in enumerate(messages)],
        )

    # -- derived state ----------------------------------------------------------------------

    def load_snapshot(self) -> tuple[project.State, bytes | None]:
        """The head snapshot's state and live bytes; the empty state if there is none usable."""
        row = self.conn.execute(
            "SELECT format, state, live FROM snapshot WHERE name = ?", (HEAD,)
        ).fetchone()
        state = decode_state(row[0], row[1]) if row is not None else None
        return (project.EMPTY, None) if state is None else (state, row[2])

    def save_snapshot(self, state: project.State, live: bytes) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshot (name, seq, format, state, live)"
            " VALUES (?, ?, ?, ?, ?)",
            (HEAD, state.seq, SNAPSHOT_FORMAT, marshal.dumps(project.to_plain(state)), live),
        )

    def save_checkpoint(self, state: project.State) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO checkpoint (seq, format, state) VALUES (?, ?, ?)",
            (state.seq, SNAPSHOT_FORMAT, marshal.dumps(project.to_plain(state))),
        )

    def open_incident(self, node: str, seq: int, at: int, cause: str, observer: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO incident (node, down_seq, down_at, cause, observer)"
            " VALUES (?, ?, ?, ?, ?)", (node, seq, at, cause, observer))

    def close_incident(self, node: str, seq: int, at: int) -> None:
        self.conn.execute(
            "UPDATE incident SET up_seq = ?, up_at = ? WHERE node = ? AND up_seq IS NULL",
            (seq, at, node))

    def forget_snapshots(self) -> None:
        """Drop everything derived (snapshot, checkpoints, incidents); the raw log stays."""
        for table in ("snapshot", "checkpoint", "incident"):
            self.conn.execute(f"DELETE FROM {table}")


def decode_state(format: str, blob: bytes) -> project.State | None:
    """A snapshot's state, or None if it is in another format or damaged: a cache is
    refolded, never trusted."""
    if format != SNAPSHOT_FORMAT:
        return None
    try:
        return project.from_plain(marshal.loads(blob))
    except Exception:
        return None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def read_catalog(path: str) -> bytes | None:
    """The catalog file's bytes, or None if it is missing or unreadable. Never raises: an
    unreadable catalog must not keep an event from being recorded."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def catalog_item(journal: Journal, path: str, received_us: int, observer: str) -> tuple | None:
    """A catalog event to append if the file's bytes differ from the last recorded catalog.

    Call inside the write transaction that appends the Serf event, so every event is judged
    with the catalog of its time. A file that goes missing or unreadable after a catalog was
    recorded is recorded once as an empty catalog: the log shows when, and the fold keeps
    the last good catalog. Without any catalog ever, members are the nodes.
    """
    data = read_catalog(path)
    last = journal.last_catalog()
    if data is None:
        if not last:  # never had one (allowed: members are the nodes), or already noted
            return None
        data = b""  # record that it vanished, once; the fold keeps the last good one
    if data == last:
        return None
    return (received_us, observer, "catalog", b"", data)


def catch_up(journal: Journal, live_file: str, progress=None,
             fmt: str = "droonga") -> tuple[project.State, bytes, dict]:
    """Fold every raw event after the snapshot, store the new snapshot, and rewrite the live
    file if its bytes change. Returns ``(state, live bytes, {seq: warnings})``.

    Runs in one write transaction, so concurrent handlers write the live file one at a time,
    each from a state at least as new as the last: the file never moves backwards. The
    snapshot keeps the default format's bytes; the file is written in ``fmt``.
    """
    warnings: dict[int, tuple] = {}
    with journal.write():
        state, live = journal.load_snapshot()
        pending = journal.raw_after(state.seq)
        if progress is not None:
            progress(0, len(pending))
        before = None  # the view before the next event that can change liveness
        for i, raw in enumerate(pending, 1):
            event = events.parse(raw)
            if event.warnings:
                warnings[raw.seq] = event.warnings
            if project.may_change_liveness(event):
                # Incidents are kept as events arrive, from the fold's own changes.
                if before is None:
                    before = project.view(state)
                state = project.step(state, event)
                after = project.view(state)
                for c in project.changes(before, after):
                    if c.after == "dead":
                        from .audit import cause_of  # only when a node goes down

                        journal.open_incident(c.node, raw.seq, raw.received_us,
                                              cause_of(event, after[c.node]), raw.observer)
                    elif c.before == "dead":
                        journal.close_incident(c.node, raw.seq, raw.received_us)
                before = after
            else:
                state = project.step(state, event)
            if raw.seq % CHECKPOINT_EVERY_SMALL == 0 and (
                    raw.seq % CHECKPOINT_EVERY == 0
                    or len(state.members) < SMALL_STATE_MEMBERS):
                journal.save_checkpoint(state)
            if progress is not None and i % 1000 == 0:
                progress(i, len(pending))
        if pending or live is None:
            live = livefile.render_state(state)
            journal.save_snapshot(state, live)
        if fmt != "droonga":
            live = livefile.render_state(state, fmt)
        livefile.write_atomic(live_file, live)
    return state, live, warnings
