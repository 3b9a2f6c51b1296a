"""The store's schema: SQLAlchemy models, the one owner of every table.

Alembic migrations (``migrations/``) create and upgrade it; ``alembic check`` in the tests
holds models and migrations together. The handler's stdlib fast path
(:mod:`membership_log.journal`) writes these same tables and refuses a store whose Alembic
revision is not :data:`REVISION`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from .version import SCHEMA_REVISION as REVISION  # noqa: E402,F401  (re-exported)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# On SQLite `INTEGER PRIMARY KEY` is the rowid itself; BIGINT would be a second index.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

#: The raw event log: append-only (triggers refuse UPDATE and DELETE), hash-chained.
event = Table(
    "event",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False,
           comment="gap-free, from 1, per store"),
    Column("received_us", BigInteger, nullable=False, comment="UTC microseconds since epoch"),
    Column("observer", Text, nullable=False, comment="SERF_SELF_NAME; '' if unknown"),
    Column("source", String(16), nullable=False, comment="'serf' or 'catalog'"),
    Column("env", LargeBinary, nullable=False, comment="SERF_* only: NAME=value, NUL-joined"),
    Column("stdin", LargeBinary, nullable=False, comment="byte for byte"),
    Column("hash", LargeBinary, nullable=False, comment="sha256 chained to the previous event"),
    Index(None, "source", "seq"),
)

#: Warnings the handler met while taking an event in (kept here, not on stderr, for queries).
event_note = Table(
    "event_note",
    metadata,
    Column("seq", _SEQ, ForeignKey("event.seq"), primary_key=True, autoincrement=False),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("message", Text, nullable=False),
)

#: Derived state, rebuildable from ``event`` at any time: the fold's state after ``seq``
#: (``format`` names the encoding; a snapshot in another format is ignored and refolded) and
#: the live-file bytes it gives.
snapshot = Table(
    "snapshot",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("format", String(64), nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("live", LargeBinary, nullable=False),
)


#: The central store: every node's raw events, shipped by ``membership ship``, keyed by
#: ``origin`` (the node whose store they come from: its SERF_SELF_NAME) and that store's
#: ``seq``. The other columns are the local row as it was, hash included, so each origin's
#: chain can be checked centrally. Append-only like ``event``. (A table of its own, so the
#: local log keeps SQLite's rowid as its key: the handler's inserts and storage stay lean.)
cluster_event = Table(
    "cluster_event",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("received_us", BigInteger, nullable=False),
    Column("observer", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("env", LargeBinary, nullable=False),
    Column("stdin", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Index(None, "received_us"),
)


#: Derived, like ``snapshot``: the fold's state right after every 250th or 1,000th event
#: (journal.CHECKPOINT_EVERY*),
#: so that the state at any moment is one lookup and a short fold away, however long the log
#: (``state --at``). Written as events arrive, rebuilt by ``rebuild``, checked by ``verify``.
checkpoint = Table(
    "checkpoint",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("format", String(64), nullable=False),
    Column("state", LargeBinary, nullable=False),
)


#: Derived, like ``snapshot``: every incident (a node down, then live again) as the fold's
#: changes report it, kept as events arrive so that ``audit`` reads incidents, not the whole
#: log. ``up_seq``/``up_at`` are null while the node is down.
incident = Table(
    "incident",
    metadata,
    Column("node", Text, primary_key=True),
    Column("down_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("down_at", BigInteger, nullable=False),
    Column("cause", String(16), nullable=False),
    Column("observer", Text, nullable=False),
    Column("up_seq", BigInteger),
    Column("up_at", BigInteger),
    Index(None, "down_at"),
)
