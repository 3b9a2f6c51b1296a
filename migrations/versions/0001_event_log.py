"""The event log, handler notes and derived snapshots.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The raw log is evidence: the database itself refuses to change or delete it.
SQLITE_GUARDS = [
    "CREATE TRIGGER event_no_update BEFORE UPDATE ON event "
    "BEGIN SELECT RAISE(ABORT, 'event log is append-only'); END",
    "CREATE TRIGGER event_no_delete BEFORE DELETE ON event "
    "BEGIN SELECT RAISE(ABORT, 'event log is append-only'); END",
]
POSTGRES_GUARDS = [
    "CREATE FUNCTION event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$BEGIN RAISE EXCEPTION 'event log is append-only'; END$$",
    "CREATE TRIGGER event_append_only BEFORE UPDATE OR DELETE ON event "
    "FOR EACH ROW EXECUTE FUNCTION event_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("seq", SEQ, autoincrement=False, nullable=False,
                  comment="gap-free, from 1, per store"),
        sa.Column("received_us", sa.BigInteger(), nullable=False,
                  comment="UTC microseconds since epoch"),
        sa.Column("observer", sa.Text(), nullable=False, comment="SERF_SELF_NAME; '' if unknown"),
        sa.Column("source", sa.String(length=16), nullable=False, comment="'serf' or 'catalog'"),
        sa.Column("env", sa.LargeBinary(), nullable=False,
                  comment="SERF_* only: NAME=value, NUL-joined"),
        sa.Column("stdin", sa.LargeBinary(), nullable=False, comment="byte for byte"),
        sa.Column("hash", sa.LargeBinary(), nullable=False,
                  comment="sha256 chained to the previous event"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event")),
    )
    op.create_index(op.f("ix_event_source_seq"), "event", ["source", "seq"])
    op.create_table(
        "event_note",
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
        sa.Column("n", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["seq"], ["event.seq"], name=op.f("fk_event_note_seq_event")),
        sa.PrimaryKeyConstraint("seq", "n", name=op.f("pk_event_note")),
    )
    op.create_table(
        "snapshot",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("live", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_snapshot")),
    )
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_GUARDS, "postgresql": POSTGRES_GUARDS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS event_append_only ON event")
        op.execute("DROP FUNCTION IF EXISTS event_append_only()")
    op.drop_table("snapshot")
    op.drop_table("event_note")
    op.drop_index(op.f("ix_event_source_seq"), table_name="event")
    op.drop_table("event")
