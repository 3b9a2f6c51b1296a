"""Witnessed history: each log's Merkle tree, kept by the append path, and the heads seen.

- ``merkle_head``: per log, the tree size and the RFC 6962 frontier (core/merkle), updated
  in the transaction that appends events (the node store's handler, the central store's
  ship).
- ``anchor.frontier``: the frontier at the retention anchor, so that every event kept after a
  compaction stays provable. An anchor made before this revision has none: the events before
  it are gone, so its log's tree cannot be computed (``head`` and ``prove`` say so).
- ``witness_head``: derived, every ``membership-head`` event a log holds.

The frontiers of the logs a store already holds are computed after the migration by the
upgrade's caller (``history.setup``), from the logs themselves, with the same code the
append path and ``rebuild`` use: this migration changes the schema only. The fold's state
gained the heads (state format 6), so the derived tables are refolded by that caller too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("anchor") as batch:
        batch.add_column(sa.Column("frontier", sa.LargeBinary(), nullable=True,
                                   comment="the Merkle frontier at the anchor's seq (core/merkle "
                                           "encode); null for an anchor made before 0006"))
    op.create_table(
        "merkle_head",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_merkle_head")),
    )
    op.create_table(
        "witness_head",
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.Column("observer", sa.Text(), nullable=False, comment="who recorded it: the witness"),
        sa.Column("head_origin", sa.Text(), nullable=False, comment="whose head it is"),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("conflict", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("origin", "seq", name=op.f("pk_witness_head")),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_witness_head_head_origin_size"), "witness_head",
                    ["head_origin", "size"])


def downgrade() -> None:
    op.drop_index(op.f("ix_witness_head_head_origin_size"), table_name="witness_head")
    op.drop_table("witness_head")
    op.drop_table("merkle_head")
    with op.batch_alter_table("anchor") as batch:
        batch.drop_column("frontier")
