"""PostgreSQL: the connections a process keeps, and what a read costs in round trips."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Connection, event

from kilowatt.store.base import Repositories
from kilowatt.store.sql.database import POOL_SIZE, SqlStore


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
