"""The central store's table: every node's shipped raw events, keyed by (origin, seq).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE_GUARDS = [
    "CREATE TRIGGER cluster_event_no_update BEFORE UPDATE ON cluster_event "
    "BEGIN SELECT RAISE(ABORT, 'event log is append-only'); END",
    "CREATE TRIGGER cluster_event_no_delete BEFORE DELETE ON cluster_event "
    "BEGIN SELECT RAISE(ABORT, 'event log is append-only'); END",
]
# Reuses 0001's event_append_only() function.
POSTGRES_GUARDS = [
    "CREATE TRIGGER cluster_event_append_only BEFORE UPDATE OR DELETE ON cluster_event "
    "FOR EACH ROW EXECUTE FUNCTION event_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "cluster_event",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.Column("observer", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("env", sa.LargeBinary(), nullable=False),
        sa.Column("stdin", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "seq", name=op.f("pk_cluster_event")),
    )
    op.create_index(op.f("ix_cluster_event_received_us"), "cluster_event", ["received_us"])
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_GUARDS, "postgresql": POSTGRES_GUARDS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS cluster_event_append_only ON cluster_event")
    op.drop_index(op.f("ix_cluster_event_received_us"), table_name="cluster_event")
    op.drop_table("cluster_event")
