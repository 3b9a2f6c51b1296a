"""Derived tables for long logs: checkpoints of the fold's state every 1,000 events (for
state --at) and incidents kept as events arrive (for audit).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "checkpoint",
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
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


def downgrade() -> None:
    op.drop_index(op.f("ix_incident_down_at"), table_name="incident")
    op.drop_table("incident")
    op.drop_table("checkpoint")
