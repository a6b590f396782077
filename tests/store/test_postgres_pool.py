"""PostgreSQL: the connections a process keeps, what a read costs in round trips, and
the last-seen flush that never waits for another transaction's row locks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, event

from kilowatt.domain.models import ChargePoint
from kilowatt.store.base import Repositories
from kilowatt.store.sql.database import POOL_SIZE, SqlStore, open_store
from tests.servers import asyncpg_dsn

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _connects(store: SqlStore) -> list[int]:
    """A counter of the connections ``store`` opens from now on."""
    opened = [0]
    engine = store._async_engine  # the pool is what is under test
    assert engine is not None

    def connected(*_: Any) -> None:
        opened[0] += 1

    event.listen(engine.sync_engine, "connect", connected)
    return opened


def _sleep(connection: Connection) -> int:
    connection.exec_driver_sql("SELECT pg_sleep(0.05)")
    return 1


async def test_a_burst_of_reads_does_not_churn_connections(postgres_store: SqlStore) -> None:
    # A reconnect storm: every charge point's credentials read at once. Connections
    # opened beyond the pool's size and closed when returned made each later burst
    # (and, under load, a dozen reads a second) pay for a new backend process.
    opened = _connects(postgres_store)
    burst = 3 * POOL_SIZE

    async def reads() -> int:
        done = await asyncio.gather(*[postgres_store.run_sync_read(_sleep) for _ in range(burst)])
        return sum(done)

    assert await reads() == burst
    first = opened[0]
    assert 0 < first <= POOL_SIZE
    assert await reads() == burst
    assert opened[0] == first  # the same connections, kept


def _one_transaction(connection: Connection) -> bool:
    """Whether two statements run in one transaction: now() is the time a transaction
    began, the same for all of its statements."""
    first = connection.exec_driver_sql("SELECT now()").scalar()
    connection.exec_driver_sql("SELECT pg_sleep(0.002)")
    return bool(first == connection.exec_driver_sql("SELECT now()").scalar())


def _in_one_transaction(repos: Repositories) -> bool:
    connection: Connection = repos.connection  # type: ignore[attr-defined]
    return _one_transaction(connection)


async def test_a_hot_path_read_is_its_statements_alone(postgres_store: SqlStore) -> None:
    # An Authorize's read: no BEGIN before its statements, nor ROLLBACK after (two
    # round trips fewer, on every Authorize).
    assert not await postgres_store.read_now(_in_one_transaction)
    assert not await postgres_store.read_now(_in_one_transaction)  # its connection reused


async def test_other_reads_and_writes_are_one_transaction(postgres_store: SqlStore) -> None:
    # A read that is not on the hot path keeps its transaction (nothing it writes is
    # kept), on connections from the same pool as the hot path's reads.
    assert not await postgres_store.read_now(_in_one_transaction)
    assert await postgres_store.read(_in_one_transaction)
    assert await postgres_store.run_sync_read(_one_transaction)
    writes = [postgres_store.run_sync_admin(_one_transaction) for _ in range(3)]
    assert all(await asyncio.gather(*writes))
    assert await postgres_store.write(_in_one_transaction)
    assert not await postgres_store.read_now(_in_one_transaction)


async def test_last_seen_skips_a_charge_point_another_transaction_holds(
    postgres_store: SqlStore, postgres_url: str
) -> None:
    # The last-seen flush of one node must not wait for a row that a StartTransaction
    # of another node holds: with each waiting on the other, PostgreSQL breaks the
    # deadlock only after a second, failing one side's whole group.
    def add(repos: Repositories) -> None:
        for cp in ("CP-1", "CP-2"):
            repos.charge_points.add(ChargePoint(cp), T0)

    await postgres_store.write(add)
    holder = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        async with holder.transaction():
            await holder.execute("SELECT id FROM charge_points WHERE id = 'CP-1' FOR UPDATE")
            seen = [("CP-2", T0 + timedelta(seconds=2)), ("CP-1", T0 + timedelta(seconds=1))]
            async with asyncio.timeout(10):  # it would wait for the lock until the end
                await postgres_store.write(lambda repos: repos.charge_points.touch(seen))
        points = await postgres_store.read(lambda r: r.charge_points.list_charge_points())
        last_seen = {point.id: point.last_seen_at for point in points}
        assert last_seen == {"CP-1": None, "CP-2": T0 + timedelta(seconds=2)}

        # Free again, it is written at the next flush.
        await postgres_store.write(lambda repos: repos.charge_points.touch(seen))
        points = await postgres_store.read(lambda r: r.charge_points.list_charge_points())
        assert {point.id: point.last_seen_at for point in points}["CP-1"] == T0 + timedelta(
            seconds=1
        )
    finally:
        await holder.close()


def _slow(repos: Repositories) -> str:
    connection: Connection = repos.connection  # type: ignore[attr-defined]
    connection.exec_driver_sql("SELECT pg_sleep(0.5)")
    return "slow"


def _fast(repos: Repositories) -> str:
    return "fast"


async def _finishing_order(store: SqlStore) -> list[str]:
    done: list[str] = []

    async def write(work: Any) -> None:
        done.append(await store.write(work))

    slow = asyncio.create_task(write(_slow))
    await asyncio.sleep(0.1)  # its group is committing: the next write starts another
    await asyncio.gather(slow, write(_fast))
    return done


@pytest.mark.parametrize(("groups", "order"), [(1, ["slow", "fast"]), (2, ["fast", "slow"])])
async def test_groups_in_flight_at_once(postgres_url: str, groups: int, order: list[str]) -> None:
    # database_concurrent_groups: with 2, a write does not wait for the group that is
    # committing when it arrives; with 1 (the default), it does. (No table is touched.)
    store = open_store(postgres_url, concurrent_groups=groups)
    try:
        assert await _finishing_order(store) == order
    finally:
        await store.close()


async def test_closing_waits_for_every_group_in_flight(postgres_url: str) -> None:
    store = open_store(postgres_url, concurrent_groups=2)
    first = asyncio.create_task(store.write(_slow))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(store.write(_slow))
    await asyncio.sleep(0.1)
    async with asyncio.timeout(10):
        await store.close()
    assert first.done() and second.done()
    assert first.result() == second.result() == "slow"
