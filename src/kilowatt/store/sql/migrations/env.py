"""Alembic environment: migrations run on a connection Kilowatt hands in."""

from __future__ import annotations

from alembic import context

from kilowatt.store.sql.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guard against the bare alembic CLI
    raise RuntimeError("run migrations with `kilowatt db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
