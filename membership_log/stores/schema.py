"""The store's schema: SQLAlchemy models, the one owner of every table.

Alembic migrations (``migrations/``) create and upgrade it; ``alembic check`` in the tests
holds models and migrations together. The node store's stdlib fast path
(:mod:`membership_log.stores.node`) writes these same tables and refuses a store whose Alembic
revision is not :data:`REVISION`; a test holds its SQL to these models.
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
    text,
)

from ..version import SCHEMA_REVISION as REVISION  # noqa: E402,F401  (re-exported)

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
    # Only the log's own records (catalogs, retention anchors) are looked up by source: a
    # partial index holds just those, instead of one entry per event (19 bytes of each).
    Index("ix_event_records", "seq", sqlite_where=text("source != 'serf'"),
          postgresql_where=text("source != 'serf'")),
)

#: Warnings the handler met while taking an event in (kept here, not on stderr, for queries).
event_note = Table(
    "event_note",
    metadata,
    Column("seq", _SEQ, ForeignKey("event.seq"), primary_key=True, autoincrement=False),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("message", Text, nullable=False),
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


#: What kind of store this is: ``role`` is ``node`` (one node's own log, in ``event``, written
#: by its handler) or ``central`` (every node's shipped log, in ``cluster_event``). Set when the
#: store is created, so that no command guesses the role from the SQL dialect.
store_info = Table(
    "store_info",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Everything below is derived from the raw log by the one fold driver (derive.py) and can be
# rebuilt from it at any time. ``origin`` names the log: '' for a node store's own, the node's
# name for each log a central store holds, so both roles keep the same derived tables.

#: The fold's state after the last folded event of each log (``format`` names the encoding; a
#: row in another format is refolded, never trusted), and the live-file bytes it gives.
snapshot = Table(
    "snapshot",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("format", String(64), nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("live", LargeBinary, nullable=False),
)

#: The fold's state right after some events (history.driver decides which), so that the
#: state at any moment is one lookup and a short fold away, however long the log.
#: ``max_at``: the latest receive time up to this event; ``min_at``: the earliest receive time
#: of the events since the previous checkpoint (or the anchor), so that "the last event
#: received at or before T" is found in one stretch between checkpoints, however the clock
#: stepped.
checkpoint = Table(
    "checkpoint",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("max_at", BigInteger, nullable=False),
    Column("min_at", BigInteger, nullable=False),
    Column("format", String(64), nullable=False),
    Column("state", LargeBinary, nullable=False),
    Index(None, "origin", "seq", "min_at"),
    sqlite_with_rowid=False,
)

#: Every incident (a node down, then live again) as the fold's changes report it, so that an
#: audit reads incidents, not the log. ``up_seq``/``up_at`` are null while the node is down.
incident = Table(
    "incident",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("node", Text, primary_key=True),
    Column("down_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("down_at", BigInteger, nullable=False),
    Column("cause", String(16), nullable=False),
    Column("observer", Text, nullable=False),
    Column("up_seq", BigInteger),
    Column("up_at", BigInteger),
    Index(None, "origin", "down_at"),
    sqlite_with_rowid=False,
)

#: Each session of an observer's Serf agent: it begins with a ``member-join`` naming the
#: observer itself. ``gap_from``: the observer's previous event, when it last could see; the
#: time from there to ``started_at`` is unobserved.
observer_session = Table(
    "observer_session",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("observer", Text, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("gap_from", BigInteger),
)

#: Retention (``membership compact``): the last dropped event of a log (its seq, hash and
#: receive time), the fold's state right after it and the SHA-256 of the catalog in force.
#: The kept chain verifies from here; the event table's delete guard lets only events at or
#: below the anchor go; an event of source ``anchor`` in the log records all of it, so the
#: chain covers the anchor too.
anchor = Table(
    "anchor",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("max_at", BigInteger, nullable=False),
    Column("format", String(64), nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("catalog_sha256", LargeBinary),
    Column("frontier", LargeBinary, comment="the Merkle frontier at the anchor's seq "
           "(core/merkle encode); null for an anchor made before 0006"),
)

# Witnessed history (SPEC): a Merkle tree over each log's event hashes, in seq order from 1.

#: Each log's Merkle tree as the append path keeps it: its ``size`` (the head seq) and its
#: frontier (:func:`membership_log.core.merkle.encode`: the roots of the perfect subtrees
#: covering leaves 0..size-1, at most 64 hashes). Written in the transaction that appends
#: the events; a function of the log (the anchor's frontier extended by every kept event),
#: which ``verify`` checks and ``rebuild`` recomputes.
merkle_head = Table(
    "merkle_head",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("frontier", LargeBinary, nullable=False),
)

#: Derived (the one fold driver keeps it): every ``membership-head`` event a log holds, the
#: head it names (``head_origin``'s tree at ``size`` has ``root``) and, if the fold found it
#: contradicting an earlier head of that origin, why (``conflict``). The central store holds
#: every shipped log to the heads other observers recorded for it (``verify``, ``ship``).
witness_head = Table(
    "witness_head",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("received_us", BigInteger, nullable=False),
    Column("observer", Text, nullable=False, comment="who recorded it: the witness"),
    Column("head_origin", Text, nullable=False, comment="whose head it is"),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary, nullable=False),
    Column("conflict", Text),
    Index(None, "head_origin", "size"),
    sqlite_with_rowid=False,
)

#: Spool files already taken in, by name, recorded in the transaction that appends their
#: events: a crash between that commit and deleting the files cannot take them in twice.
spool_intake = Table(
    "spool_intake",
    metadata,
    Column("name", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

#: ``membership alerts``: what was delivered to which Alertmanager, per incident, so that a
#: restart neither loses nor repeats one. ``resolved_at`` is set once its end was delivered.
#: A witness conflict (alert ``MembershipWitnessConflict``) is kept here too, under the log
#: that recorded it: ``node`` is the head's origin and ``down_seq`` minus the seq of the
#: conflicting head's event (negative: never an incident's seq or start time).
alert_delivery = Table(
    "alert_delivery",
    metadata,
    Column("target", Text, primary_key=True),
    Column("origin", Text, primary_key=True),
    Column("node", Text, primary_key=True),
    Column("down_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("firing_at", BigInteger, nullable=False),
    Column("resolved_at", BigInteger),
)
