"""message log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("charge_point_id", sa.String(length=48), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_type", sa.Integer(), nullable=True),
        sa.Column("unique_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=True),
        sa.Column("frame", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_log")),
    )
    # Newest-first listing per charge point walks this index backwards.
    op.create_index(
        op.f("ix_message_log_charge_point_id_id"),
        "message_log",
        ["charge_point_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_message_log_charge_point_id_id"), table_name="message_log")
    op.drop_table("message_log")
