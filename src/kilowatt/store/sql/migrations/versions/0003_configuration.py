"""charge point configuration

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _charge_point_id(table: str) -> list[Any]:
    """The charge_point_id column and its foreign key (the row goes with the charge point)."""
    return [
        sa.Column("charge_point_id", sa.String(length=48), nullable=False),
        sa.ForeignKeyConstraint(
            ["charge_point_id"],
            ["charge_points.id"],
            name=op.f(f"fk_{table}_charge_point_id_charge_points"),
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "configuration_reported",
        *_charge_point_id("configuration_reported"),
        sa.Column("key", sa.String(length=50), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("readonly", sa.Boolean(), nullable=True),
        sa.Column("unknown", sa.Boolean(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charge_point_id", "key", name=op.f("pk_configuration_reported")),
    )
    op.create_table(
        "configuration_sync",
        *_charge_point_id("configuration_sync"),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("charge_point_id", name=op.f("pk_configuration_sync")),
    )
    op.create_table(
        "configuration_templates",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_configuration_templates")),
    )
    op.create_table(
        "configuration_template_values",
        sa.Column("template", sa.String(length=50), nullable=False),
        sa.Column("key", sa.String(length=50), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template"],
            ["configuration_templates.name"],
            name=op.f("fk_configuration_template_values_template_configuration_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("template", "key", name=op.f("pk_configuration_template_values")),
    )
    op.create_table(
        "configuration_template_members",
        *_charge_point_id("configuration_template_members"),
        sa.Column("template", sa.String(length=50), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template"],
            ["configuration_templates.name"],
            name=op.f("fk_configuration_template_members_template_configuration_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("charge_point_id", name=op.f("pk_configuration_template_members")),
    )
    with op.batch_alter_table("configuration_template_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_configuration_template_members_template"), ["template"], unique=False
        )
    op.create_table(
        "configuration_desired",
        *_charge_point_id("configuration_desired"),
        sa.Column("key", sa.String(length=50), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charge_point_id", "key", name=op.f("pk_configuration_desired")),
    )
    op.create_table(
        "configuration_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        *_charge_point_id("configuration_changes"),
        sa.Column("key", sa.String(length=50), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("secret", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_configuration_changes")),
    )
    with op.batch_alter_table("configuration_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_configuration_changes_charge_point_id_key_id"),
            ["charge_point_id", "key", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("configuration_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_configuration_changes_charge_point_id_key_id"))
    op.drop_table("configuration_changes")
    op.drop_table("configuration_desired")
    with op.batch_alter_table("configuration_template_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_configuration_template_members_template"))
    op.drop_table("configuration_template_members")
    op.drop_table("configuration_template_values")
    op.drop_table("configuration_templates")
    op.drop_table("configuration_sync")
    op.drop_table("configuration_reported")
