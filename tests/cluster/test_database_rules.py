"""The rules two nodes could break together hold in the database itself.

Two stores on one database stand for two nodes (two connection pools, two group
commits): their StartTransactions race for real on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from kilowatt.clock import FakeClock
from kilowatt.domain.models import AuthorizationStatus, ChargePoint, IdTag
from kilowatt.services.transactions import TransactionService
from kilowatt.store.sql import tables
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import upgrade
from tests.servers import asyncpg_dsn

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
async def two_nodes(store: SqlStore, engine_url: str) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    other = open_store(engine_url)
    try:
        yield store, other
    finally:
        await other.close()


async def setup(store: SqlStore, *charge_points: str) -> None:
    def work(repos: Any) -> None:
        for charge_point_id in charge_points:
            repos.charge_points.add(ChargePoint(id=charge_point_id), NOW)
        repos.id_tags.add(IdTag("TAG"), NOW)

    await store.write(work)


def _transaction(connector_id: int, state: str, meter_start: int) -> dict[str, Any]:
    return {
        "charge_point_id": "CP1",
        "connector_id": connector_id,
        "id_tag": "TAG",
        "meter_start": meter_start,
        "started_at": NOW + timedelta(seconds=meter_start),
        "start_status": "Accepted",
        "state": state,
        "flags": [],
        "created_at": NOW,
        "updated_at": NOW,
    }


async def test_one_active_transaction_per_connector(store: SqlStore) -> None:
    def add(*rows: dict[str, Any]) -> Any:
        return lambda connection: connection.execute(insert(tables.transactions), list(rows))

    await store.run_sync_admin(
        add(
            _transaction(1, "completed", 1),
            _transaction(1, "abandoned", 2),
            _transaction(1, "active", 3),
            _transaction(2, "active", 4),
        )
    )
    with pytest.raises(IntegrityError):
        await store.run_sync_admin(add(_transaction(1, "active", 5)))


async def test_concurrent_starts_on_one_connector_leave_one_active(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    one, two = two_nodes
    await setup(one, "CP1")
    clock = FakeClock(NOW)
    services = [TransactionService(one, clock), TransactionService(two, clock)]

    results = await asyncio.gather(
        *(
            services[i % 2].start(
                "CP1",
                connector_id=1,
                id_tag="TAG",
                meter_start=i,
                timestamp=NOW + timedelta(seconds=i),
            )
            for i in range(20)
        )
    )

    ids = [result.transaction_id for result in results]
    assert len(set(ids)) == 20
    active = await one.read(
        lambda repos: repos.transactions.list_active(charge_point_id="CP1", connector_id=1)
    )
    assert len(active) == 1
    abandoned = sum(len(result.abandoned) for result in results)
    assert abandoned == 19


async def test_an_id_tag_is_not_accepted_twice_by_two_nodes(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    one, two = two_nodes
    await setup(one, *(f"CP{i}" for i in range(8)))
    clock = FakeClock(NOW)
    services = [TransactionService(one, clock), TransactionService(two, clock)]

    results = await asyncio.gather(
        *(
            services[i % 2].start(
                f"CP{i}", connector_id=1, id_tag="TAG", meter_start=0, timestamp=NOW
            )
            for i in range(8)
        )
    )

    statuses = sorted(result.id_tag_info.status for result in results)
    assert statuses.count(AuthorizationStatus.ACCEPTED) == 1, statuses
    assert statuses.count(AuthorizationStatus.CONCURRENT_TX) == 7, statuses


@pytest.fixture
async def scratch_store(engine_url: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A store on an empty database that was never migrated."""
    if make_url(engine_url).get_backend_name() == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/scratch.db")
        try:
            yield store
        finally:
            await store.close()
        return
    name = f"kilowatt_scratch_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(engine_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        store = open_store(make_url(engine_url).set(database=name).render_as_string(False))
        try:
            yield store
        finally:
            await store.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_migration_0004_closes_older_duplicates_first(scratch_store: SqlStore) -> None:
    fresh_store = scratch_store
    await upgrade(fresh_store, "0003")
    rows = [_transaction(1, "active", n) for n in (1, 2)] + [_transaction(2, "active", 3)]
    await fresh_store.run_sync_admin(
        lambda connection: connection.execute(insert(tables.transactions), rows)
    )

    await upgrade(fresh_store)

    def states(connection: Any) -> dict[int, tuple[str, str | None]]:
        t = tables.transactions.c
        result = connection.execute(select(t.id, t.state, t.stop_reason).order_by(t.id))
        return {row.id: (row.state, row.stop_reason) for row in result}

    assert await fresh_store.run_sync_admin(states) == {
        1: ("abandoned", "superseded by a new transaction on the same connector"),
        2: ("active", None),
        3: ("active", None),
    }
