"""Times as the SPEC reads them, and a retention anchor the chain covers.

- ``checkpoint.min_at``: the earliest receive time among the events since the previous
  checkpoint. "The state at T" is the state after the last event (by seq) received at or
  before T; with the earliest time of every stretch between checkpoints that is an index
  lookup and a scan of one stretch, even when one event's receive time lies far in the
  future (which used to hide every later event from time-based reads).
- ``anchor.catalog_sha256``: the SHA-256 of the last catalog recorded at or before the
  anchor, so that a handler after a compaction that dropped every catalog event knows the
  catalog in force is unchanged (it used to record it again).
- ``ix_event_records``: catalogs and anchors, the only events looked up by source, in a
  partial index, instead of an index entry for every event.
- The anchor's summary is now also recorded in the raw log itself, as an event of source
  ``anchor`` appended by ``compact`` (or, for an anchor made by 0004, by the first upgrade):
  the hash chain covers it, so a forged anchor state no longer verifies.

The derived tables are a cache: they are truncated to what the fold knew at the retention
anchor (everything, on a store never compacted) and refolded by the upgrade's caller.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _truncate_derived(bind) -> None:
    """What the fold knew at each log's retention anchor (nothing, without one): the same
    as the stores' ``truncate_derived``."""
    anchors = dict(bind.execute(sa.text("SELECT origin, seq FROM anchor")).all())
    origins = {r[0] for r in bind.execute(sa.text(
        "SELECT DISTINCT origin FROM incident UNION SELECT DISTINCT origin FROM "
        "observer_session UNION SELECT DISTINCT origin FROM snapshot")).all()}
    bind.execute(sa.text("DELETE FROM snapshot"))
    for origin in origins:
        seq = anchors.get(origin, 0)
        params = {"o": origin, "s": seq}
        bind.execute(sa.text("DELETE FROM incident WHERE origin = :o AND down_seq > :s"), params)
        bind.execute(sa.text("UPDATE incident SET up_seq = NULL, up_at = NULL WHERE origin = :o "
                             "AND up_seq > :s"), params)
        bind.execute(sa.text("DELETE FROM observer_session WHERE origin = :o AND seq > :s"),
                     params)


def upgrade() -> None:
    bind = op.get_bind()
    _truncate_derived(bind)
    op.drop_table("checkpoint")
    op.create_table(
        "checkpoint",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("max_at", sa.BigInteger(), nullable=False),
        sa.Column("min_at", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "seq", name=op.f("pk_checkpoint")),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_checkpoint_origin_seq_min_at"), "checkpoint",
                    ["origin", "seq", "min_at"])
    with op.batch_alter_table("anchor") as batch:
        batch.add_column(sa.Column("catalog_sha256", sa.LargeBinary(), nullable=True))
    # Catalogs and anchors are the only events looked up by source: a partial index of them
    # replaces an index entry per event.
    op.drop_index(op.f("ix_event_source_seq"), table_name="event")
    op.create_index("ix_event_records", "event", ["seq"],
                    sqlite_where=sa.text("source != 'serf'"),
                    postgresql_where=sa.text("source != 'serf'"))


def downgrade() -> None:
    bind = op.get_bind()
    _truncate_derived(bind)
    op.drop_index("ix_event_records", table_name="event")
    op.create_index(op.f("ix_event_source_seq"), "event", ["source", "seq"])
    with op.batch_alter_table("anchor") as batch:
        batch.drop_column("catalog_sha256")
    op.drop_index(op.f("ix_checkpoint_origin_seq_min_at"), table_name="checkpoint")
    op.drop_table("checkpoint")
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
