"""meter values: the unique sample index leads with the sample's time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 12:30:00.000000

The same columns, the same uniqueness (a retransmitted sample is stored once), in
another order. With the charge point first, every new sample's index entry went to
that charge point's place in the B-tree: under load, one scattered page per charge
point written at every commit. With the time first, new entries go to the end of it,
as the rows themselves do.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_meter_values_sample"
REST: list[str | sa.TextClause] = [
    "measurand",
    "phase",
    "location",
    "context",
    sa.text("coalesce(transaction_id, -1)"),
]


def upgrade() -> None:
    _recreate(["timestamp", "charge_point_id", "connector_id"])


def downgrade() -> None:
    _recreate(["charge_point_id", "connector_id", "timestamp"])


def _recreate(first: list[str]) -> None:
    op.drop_index(INDEX, table_name="meter_values")
    op.create_index(INDEX, "meter_values", [*first, *REST], unique=True)
