"""The hot path's reads run on the driver (SQLite and PostgreSQL) and return what the
Core path does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine

from kilowatt.domain.models import (
    AuthorizationStatus,
    ChargePoint,
    IdTag,
    Transaction,
    TransactionState,
)
from kilowatt.store.base import Repositories
from kilowatt.store.sql.database import SqlStore
from kilowatt.store.sql.repositories import (
    _FIND_FOR_START,
    _GET_ID_TAG_WITH_ACTIVE_COUNT,
    _GET_TRANSACTION,
    _LOCK_FOR_START,
    driver_reads,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def seed(repos: Repositories) -> None:
    repos.charge_points.add(ChargePoint("CP-1"), T0)
    repos.id_tags.add(
        IdTag(
            "TAG-1",
            AuthorizationStatus.BLOCKED,
            expiry_date=T0 + timedelta(days=30),
            parent_id_tag="PARENT",
            owner="Ann",
            note="fleet card",
            max_concurrent_transactions=2,
        ),
        T0,
    )
    repos.id_tags.add(IdTag("TAG-2"), T0)
    started = repos.transactions.add(
        Transaction(0, "CP-1", 1, "TAG-1", 100, T0, flags=("clock_skew",)), T0
    )
    repos.transactions.add(Transaction(0, "CP-1", 2, "TAG-1", 5, T0 + timedelta(seconds=1)), T0)
    repos.transactions.stop(
        started,
        state=TransactionState.COMPLETED,
        meter_stop=200,
        stopped_at=T0 + timedelta(hours=1),
        reason="Local",
        stop_id_tag="TAG-1",
        energy_wh=100,
        flags=["clock_skew", "stopped_twice"],
        now=T0,
    )
    repos.transactions.add(Transaction(0, "CP-1", 1, "TAG-1", 300, T0 + timedelta(hours=2)), T0)


def both_paths(repos: Repositories) -> list[tuple[list[Any], list[Any]]]:
    connection: Connection = repos.connection  # type: ignore[attr-defined]
    reads = driver_reads(connection.dialect)
    assert reads.find_for_start and reads.id_tag_with_active_count and reads.transaction
    pairs = []
    for tag in ("TAG-1", "TAG-2", "NOPE"):
        parameters = {"id_tag": tag}
        core = [tuple(row) for row in connection.execute(_GET_ID_TAG_WITH_ACTIVE_COUNT, parameters)]
        pairs.append((core, reads.id_tag_with_active_count.rows(connection, parameters)))
    for connector, started_at, meter_start in (
        (1, T0, 100),
        (1, T0 + timedelta(hours=2), 300),
        (2, T0, 0),
        (3, T0, 0),
    ):
        parameters = {
            "cp": "CP-1",
            "connector": connector,
            "id_tag": "TAG-1",
            "started_at": started_at,
            "meter_start": meter_start,
        }
        core = [tuple(row) for row in connection.execute(_FIND_FOR_START, parameters)]
        pairs.append((core, reads.find_for_start.rows(connection, parameters)))
    for transaction_id in (1, 2, 3, 99):
        by_id = {"id": transaction_id}
        core = [tuple(row) for row in connection.execute(_GET_TRANSACTION, by_id)]
        pairs.append((core, reads.transaction.rows(connection, by_id)))
    for cp, tag in (("CP-1", "TAG-1"), ("CP-1", "NOPE"), ("NOPE", "TAG-2")):
        # StartTransaction's row locks (PostgreSQL; SQLite has no FOR UPDATE).
        ids = {"cp": cp, "id_tag": tag}
        core = [tuple(row) for row in connection.execute(_LOCK_FOR_START, ids)]
        pairs.append((core, reads.lock_for_start.rows(connection, ids)))
    return pairs


async def test_the_driver_path_returns_what_the_core_path_returns(store: SqlStore) -> None:
    await store.write(seed)
    pairs = await store.read(both_paths)
    assert any(core for core, _ in pairs)  # rows with None, JSON, datetimes, enums
    for core, fast in pairs:
        assert fast == core
        for row in fast:
            for value in row:
                if isinstance(value, datetime):
                    assert value.tzinfo is UTC


async def test_the_hot_reads_skip_sqlalchemy_s_execution(store: SqlStore) -> None:
    await store.write(seed)
    engine = store._read_engine if store.dialect == "sqlite" else store._async_engine
    assert engine is not None
    if isinstance(engine, AsyncEngine):
        engine = engine.sync_engine
    seen: list[str] = []

    def record(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        tag, active = await store.read(lambda r: r.id_tags.get_with_active_count("TAG-1"))
        started, others = await store.read(
            lambda r: r.transactions.find_for_start("CP-1", 1, "TAG-1", T0, 100)
        )
        stopped = await store.read(lambda r: r.transactions.get(1))
        await store.read(lambda r: r.transactions.lock_for_start("CP-1", "TAG-1"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert tag is not None and tag.status is AuthorizationStatus.BLOCKED and active == 2
    assert started is not None and started.state is TransactionState.COMPLETED
    assert [t.meter_start for t in others] == [300]
    assert stopped is not None and stopped.flags == ("clock_skew", "stopped_twice")
    assert not [s for s in seen if "FROM transactions" in s or "FROM id_tags" in s]
