"""Schema migrations on SQLite and PostgreSQL: idempotent, at head, and equal to
``tables.metadata`` (what the repositories are written against)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url

from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import current_revision, head_revision, upgrade
from kilowatt.store.sql.tables import metadata
from tests.servers import asyncpg_dsn


@pytest.fixture
async def fresh_url(engine_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database that was never migrated, on the engine of ``engine_url``."""
    if make_url(engine_url).get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    name = f"kilowatt_fresh_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(engine_url))
    try:
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.InsufficientPrivilegeError as exc:
            pytest.skip(f"cannot create a scratch database on this server: {exc}")
        try:
            yield make_url(engine_url).set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def fresh_store(fresh_url: str) -> AsyncIterator[SqlStore]:
    store = open_store(fresh_url)
    try:
        yield store
    finally:
        await store.close()


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_head_revision_exists() -> None:
    assert head_revision() is not None


async def test_upgrade_from_empty_reaches_head_and_is_idempotent(fresh_store: SqlStore) -> None:
    assert await current_revision(fresh_store) is None
    assert await fresh_store.run_sync_admin(_table_names) == set()

    await upgrade(fresh_store)
    assert await current_revision(fresh_store) == head_revision()
    tables_after_first = await fresh_store.run_sync_admin(_table_names)
    assert tables_after_first == {*metadata.tables, "alembic_version"}

    await upgrade(fresh_store)
    assert await current_revision(fresh_store) == head_revision()
    assert await fresh_store.run_sync_admin(_table_names) == tables_after_first


async def test_upgrade_twice_keeps_data(store: SqlStore) -> None:
    # The ``store`` fixture has upgraded once already.
    await upgrade(store)
    await store.run_sync_admin(
        lambda c: c.execute(
            text(
                "INSERT INTO id_tags (id_tag, status, max_concurrent_transactions,"
                " created_at, updated_at) VALUES ('TAG-1', 'Accepted', 1,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    )
    await upgrade(store)
    assert await current_revision(store) == head_revision()
    count = await store.run_sync_admin(
        lambda c: c.execute(text("SELECT count(*) FROM id_tags")).scalar_one()
    )
    assert count == 1


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        # SQLAlchemy cannot reflect SQLite expression indexes and says so; the
        # expression index is checked on its own below.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        return list(compare_metadata(context, metadata))


def _describe(difference: Any) -> str:
    """One autogenerate difference, with the names that tell what it is about."""
    if isinstance(difference, list):  # column modifications come grouped
        return "; ".join(_describe(item) for item in difference)
    operation, *arguments = difference
    described = [operation]
    for argument in arguments:
        name = getattr(argument, "name", None)
        table = getattr(argument, "table", None)
        columns = getattr(argument, "columns", None)
        if name is not None or columns is not None:
            column_names = [getattr(c, "name", str(c)) for c in columns] if columns else []
            table_name = getattr(table, "name", None)
            described.append(f"{type(argument).__name__} {name!r} on {table_name} {column_names}")
        else:
            described.append(repr(argument))
    return " ".join(described)


async def test_migrated_schema_matches_metadata(store: SqlStore) -> None:
    differences = await store.run_sync_admin(_schema_differences)
    described = [_describe(difference) for difference in differences]
    assert not described, "migrations and tables.metadata differ:\n" + "\n".join(described)


def _sample_index_sql(connection: Connection) -> str | None:
    if connection.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    value = connection.execute(text(query), {"name": "uq_meter_values_sample"}).scalar()
    return None if value is None else str(value)


async def test_unique_expression_index_on_meter_values_exists(store: SqlStore) -> None:
    sql = await store.run_sync_admin(_sample_index_sql)

    assert sql is not None
    normalized = " ".join(sql.lower().replace('"', "").split())
    assert normalized.startswith("create unique index uq_meter_values_sample on ")
    assert "meter_values" in normalized
    assert "coalesce(transaction_id, -1)" in normalized or (
        "coalesce(transaction_id, '-1'::integer)" in normalized
    )
    columns = ("charge_point_id", "connector_id", "timestamp", "measurand", "phase", "location")
    for column in (*columns, "context"):
        assert column in normalized
    # The sample's time first (migration 0005): new entries go to the end of the index.
    listed = normalized.split("(", 1)[1]
    assert listed.lstrip().startswith("timestamp"), normalized
