"""cluster: at most one active transaction per connector

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 03:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_transactions_active_connector"
ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    # Before the index can exist: a connector with several active transactions (only
    # a race could leave that) keeps the newest; the others are closed as abandoned,
    # as StartTransaction would have done.
    op.execute(
        """
        UPDATE transactions
        SET state = 'abandoned',
            stop_reason = COALESCE(
                stop_reason, 'superseded by a new transaction on the same connector'
            )
        WHERE state = 'active'
          AND EXISTS (
              SELECT 1 FROM transactions AS newer
              WHERE newer.charge_point_id = transactions.charge_point_id
                AND newer.connector_id = transactions.connector_id
                AND newer.state = 'active'
                AND newer.id > transactions.id
          )
        """
    )
    op.create_index(
        INDEX,
        "transactions",
        ["charge_point_id", "connector_id"],
        unique=True,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="transactions")
