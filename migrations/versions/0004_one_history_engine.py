"""One history engine: the store's role recorded; the derived tables keyed by log (origin) so
that a central store keeps them too; observer sessions; the retention anchor and its delete
guard; spool intake; alert delivery.

The derived tables are dropped and recreated empty: everything in them is refolded from the
raw log by the upgrade's caller (``membership db upgrade`` / ``init``) or the first catch-up,
so an upgraded store never reports an audit without its history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The raw log stays append-only; retention may drop only events at or below the recorded
# anchor (membership compact sets the anchor first, in the same transaction).
SQLITE_DELETE_GUARD_OLD = (
    "CREATE TRIGGER event_no_delete BEFORE DELETE ON event "
    "BEGIN SELECT RAISE(ABORT, 'event log is append-only'); END"
)
SQLITE_DELETE_GUARD = (
    "CREATE TRIGGER event_no_delete BEFORE DELETE ON event "
    "WHEN NOT EXISTS (SELECT 1 FROM anchor WHERE origin = '' AND seq >= OLD.seq) "
    "BEGIN SELECT RAISE(ABORT, 'event log is append-only (only membership compact drops "
    "events, up to its anchor)'); END"
)


def _role(bind) -> str:
    if bind.dialect.name != "sqlite":
        return "central"
    shipped = bind.execute(sa.text("SELECT 1 FROM cluster_event LIMIT 1")).first()
    return "central" if shipped else "node"


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "store_info",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_info")),
    )
    op.bulk_insert(sa.table("store_info", sa.column("key"), sa.column("value")),
                   [{"key": "role", "value": _role(bind)}])

    op.drop_index(op.f("ix_incident_down_at"), table_name="incident")
    op.drop_table("incident")
    op.drop_table("checkpoint")
    op.drop_table("snapshot")
    op.create_table(
        "snapshot",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("live", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_snapshot")),
    )
    op.create_table(
        "checkpoint",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("max_at", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "seq", name=op.f("pk_checkpoint")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "incident",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("down_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("down_at", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("observer", sa.Text(), nullable=False),
        sa.Column("up_seq", sa.BigInteger(), nullable=True),
        sa.Column("up_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("origin", "node", "down_seq", name=op.f("pk_incident")),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_incident_origin_down_at"), "incident", ["origin", "down_at"])
    op.create_table(
        "observer_session",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("observer", sa.Text(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("gap_from", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("origin", "seq", name=op.f("pk_observer_session")),
    )
    op.create_table(
        "anchor",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.Column("max_at", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_anchor")),
    )
    op.create_table(
        "spool_intake",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_spool_intake")),
    )
    op.create_table(
        "alert_delivery",
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("down_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("firing_at", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("target", "origin", "node", "down_seq",
                                name=op.f("pk_alert_delivery")),
    )
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER event_no_delete")
        op.execute(SQLITE_DELETE_GUARD)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER event_no_delete")
        op.execute(SQLITE_DELETE_GUARD_OLD)
    for table in ("alert_delivery", "spool_intake", "anchor", "observer_session"):
        op.drop_table(table)
    op.drop_index(op.f("ix_incident_origin_down_at"), table_name="incident")
    op.drop_table("incident")
    op.drop_table("checkpoint")
    op.drop_table("snapshot")
    op.drop_table("store_info")
    # 0003's shapes, empty: derived state is refolded by the older release.
    op.create_table(
        "snapshot",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("live", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_snapshot")),
    )
    seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "checkpoint",
        sa.Column("seq", seq, autoincrement=False, nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_checkpoint")),
    )
    op.create_table(
        "incident",
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("down_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("down_at", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("observer", sa.Text(), nullable=False),
        sa.Column("up_seq", sa.BigInteger(), nullable=True),
        sa.Column("up_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("node", "down_seq", name=op.f("pk_incident")),
    )
    op.create_index(op.f("ix_incident_down_at"), "incident", ["down_at"])
