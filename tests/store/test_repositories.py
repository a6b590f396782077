"""The repository contract, on SQLite and PostgreSQL alike (the ``store`` fixture).

Every test talks to the store only the way services do: units of work (plain
functions of :class:`~kilowatt.store.base.Repositories`) run by ``store.write`` and
``store.read``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from kilowatt.domain.meter import parse_meter_values, parse_value
from kilowatt.domain.models import (
    AuthorizationStatus,
    BootInfo,
    ChargePoint,
    Connector,
    IdTag,
    MeterSample,
    Registration,
    StatusRecord,
    Transaction,
    TransactionState,
    UnknownStop,
)
from kilowatt.store.base import AlreadyExists, Repositories
from kilowatt.store.sql.database import MAX_GROUP, SqlStore
from kilowatt.store.sql.hotpath import MULTI_ROW_MAX

# Microseconds on purpose: every datetime must come back exactly.
T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))


@contextlib.contextmanager
def executed(store: SqlStore, *prefixes: str) -> Iterator[list[tuple[str, bool]]]:
    """The statements starting with one of ``prefixes`` that the store's engine runs
    meanwhile, each with whether it was an executemany."""
    engine = store._sync_engine
    if engine is None:
        assert store._async_engine is not None
        engine = store._async_engine.sync_engine
    seen: list[tuple[str, bool]] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, many: bool
    ) -> None:
        if statement.startswith(prefixes):
            seen.append((statement, many))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def assert_utc(value: datetime | None, expected: datetime) -> None:
    """``value`` is timezone-aware UTC and the same instant as ``expected``."""
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    assert value == expected


async def add_charge_point(store: SqlStore, charge_point_id: str, **fields: Any) -> None:
    point = ChargePoint(charge_point_id, **fields)
    await store.write(lambda r: r.charge_points.add(point, T0))


def connector(charge_point_id: str, connector_id: int, status: str = "Available") -> Connector:
    return Connector(
        charge_point_id=charge_point_id,
        connector_id=connector_id,
        status=status,
        error_code="NoError",
        status_timestamp=at(connector_id),
        updated_at=at(10 + connector_id),
    )


def new_transaction(
    charge_point_id: str = "CP-1",
    connector_id: int = 1,
    id_tag: str = "TAG-1",
    started_at: datetime = T0,
    meter_start: int = 1000,
    **fields: Any,
) -> Transaction:
    return Transaction(
        id=0,
        charge_point_id=charge_point_id,
        connector_id=connector_id,
        id_tag=id_tag,
        meter_start=meter_start,
        started_at=started_at,
        **fields,
    )


async def add_transaction(store: SqlStore, **fields: Any) -> int:
    transaction = new_transaction(**fields)
    return await store.write(lambda r: r.transactions.add(transaction, T0))


def sample(
    seconds: float = 0,
    raw: str = "1234.5",
    *,
    transaction_id: int | None = 1,
    measurand: str = "Energy.Active.Import.Register",
    phase: str | None = None,
    charge_point_id: str = "CP-1",
    connector_id: int = 1,
) -> MeterSample:
    return MeterSample(
        charge_point_id=charge_point_id,
        connector_id=connector_id,
        transaction_id=transaction_id,
        timestamp=at(seconds),
        raw_value=raw,
        value=parse_value(raw),
        measurand=measurand,
        phase=phase,
    )


# ------------------------------------------------------------------ charge points


async def test_add_and_get_charge_point(store: SqlStore) -> None:
    await add_charge_point(
        store,
        "CP-1",
        registration=Registration.PENDING,
        description="car park, level -1",
        security_profile=2,
        password_hash="pbkdf2$...",
    )

    point = await store.read(lambda r: r.charge_points.get("CP-1"))

    assert point is not None
    assert point.id == "CP-1"
    assert point.registration is Registration.PENDING
    assert point.description == "car park, level -1"
    assert point.security_profile == 2
    assert point.password_hash == "pbkdf2$..."
    assert point.connected is False
    assert point.connected_since is None
    assert point.last_seen_at is None
    assert point.connectors == []
    assert_utc(point.created_at, T0)
    assert await store.read(lambda r: r.charge_points.get("CP-2")) is None


async def test_add_duplicate_charge_point_raises_already_exists(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1", description="first")

    with pytest.raises(AlreadyExists):
        await add_charge_point(store, "CP-1", description="second")

    point = await store.read(lambda r: r.charge_points.get("CP-1"))
    assert point is not None
    assert point.description == "first"
    # The store is still usable after the failed unit of work.
    await add_charge_point(store, "CP-2")
    assert await store.read(lambda r: r.charge_points.get("CP-2")) is not None


async def test_add_duplicate_inside_a_unit_of_work_can_be_caught(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")

    def work(r: Repositories) -> bool:
        try:
            r.charge_points.add(ChargePoint("CP-1"), T0)
        except AlreadyExists:
            r.charge_points.add(ChargePoint("CP-2"), T0)  # the transaction goes on
            return True
        return False

    assert await store.write(work) is True
    points = await store.read(lambda r: r.charge_points.list_charge_points())
    assert [point.id for point in points] == ["CP-1", "CP-2"]


async def test_update_charge_point_fields(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")

    changed = await store.write(
        lambda r: r.charge_points.update(
            "CP-1",
            at(5),
            registration=Registration.REJECTED,
            description="decommissioned",
            security_profile=1,
        )
    )

    assert changed is True
    point = await store.read(lambda r: r.charge_points.get("CP-1"))
    assert point is not None
    assert point.registration is Registration.REJECTED
    assert point.description == "decommissioned"
    assert point.security_profile == 1
    assert_utc(point.created_at, T0)  # only updated_at moves

    await store.write(lambda r: r.charge_points.update("CP-1", at(6), registration="Accepted"))
    point = await store.read(lambda r: r.charge_points.get("CP-1"))
    assert point is not None
    assert point.registration is Registration.ACCEPTED

    assert await store.write(lambda r: r.charge_points.update("CP-9", at(5), description="x")) is (
        False
    )


async def test_record_boot(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")
    boot = BootInfo(
        vendor="Acme",
        model="Wallbox 22",
        serial_number="SN-1",
        charge_box_serial_number="CB-1",
        firmware_version="1.2.3",
        iccid="8931",
        imsi="2620",
        meter_type="MID",
        meter_serial_number="M-1",
    )

    await store.write(lambda r: r.charge_points.record_boot("CP-1", boot, at(7)))

    point = await store.read(lambda r: r.charge_points.get("CP-1"))
    assert point is not None
    assert (
        point.vendor,
        point.model,
        point.serial_number,
        point.charge_box_serial_number,
        point.firmware_version,
        point.iccid,
        point.imsi,
        point.meter_type,
        point.meter_serial_number,
    ) == ("Acme", "Wallbox 22", "SN-1", "CB-1", "1.2.3", "8931", "2620", "MID", "M-1")
    assert_utc(point.last_boot_at, at(7))
    assert_utc(point.last_seen_at, at(7))


async def test_set_connection_connected_then_disconnected(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")

    await store.write(
        lambda r: r.charge_points.set_connection(
            "CP-1", connected=True, now=at(1), remote_address="127.0.0.1:50000"
        )
    )
    point = await store.read(lambda r: r.charge_points.get("CP-1"))
    assert point is not None
    assert point.connected is True
    assert_utc(point.connected_since, at(1))
    assert_utc(point.last_seen_at, at(1))
    assert point.remote_address == "127.0.0.1:50000"

    await store.write(
        lambda r: r.charge_points.set_connection(
            "CP-1", connected=False, now=at(2), remote_address=None
        )
    )
    point = await store.read(lambda r: r.charge_points.get("CP-1"))
    assert point is not None
    assert point.connected is False
    assert point.connected_since is None
    assert_utc(point.last_seen_at, at(1))


async def test_touch_sets_last_seen_of_many(store: SqlStore) -> None:
    for cp in ("CP-1", "CP-2", "CP-3"):
        await add_charge_point(store, cp)

    await store.write(
        lambda r: r.charge_points.touch([("CP-1", at(11)), ("CP-2", at(12)), ("CP-9", at(19))])
    )
    await store.write(lambda r: r.charge_points.touch([]))

    points = {p.id: p for p in await store.read(lambda r: r.charge_points.list_charge_points())}
    assert_utc(points["CP-1"].last_seen_at, at(11))
    assert_utc(points["CP-2"].last_seen_at, at(12))
    assert points["CP-3"].last_seen_at is None
    assert "CP-9" not in points


async def test_touch_of_thousands_is_one_statement(store: SqlStore) -> None:
    # flush_seen writes every connected charge point's last_seen_at every few
    # seconds: row by row, a busy event loop made that take seconds on SQLite.
    ids = [f"CP-{n}" for n in range(300)] + ['CP "quoted"', "CP-'single'", "CP-é-☃"]
    await store.write(
        lambda r: [r.charge_points.add(ChargePoint(cp), at(0)) for cp in ids] and None
    )
    seen = [(cp, at(n + 1)) for n, cp in enumerate(ids)]
    with executed(store, "UPDATE charge_points") as statements:
        await store.write(lambda r: r.charge_points.touch(seen))

    # One statement, not an executemany: on SQLite from JSON, on PostgreSQL from arrays.
    assert [many for _, many in statements] == [False]
    points = {p.id: p for p in await store.read(lambda r: r.charge_points.list_charge_points())}
    for cp, instant in seen:
        assert_utc(points[cp].last_seen_at, instant)


async def test_mark_all_disconnected(store: SqlStore) -> None:
    for cp in ("CP-1", "CP-2", "CP-3"):
        await add_charge_point(store, cp)

    def connect(r: Repositories) -> None:
        for cp in ("CP-1", "CP-2"):
            r.charge_points.set_connection(cp, connected=True, now=at(1), remote_address="x")

    await store.write(connect)
    await store.write(lambda r: r.charge_points.mark_all_disconnected(at(2)))

    points = await store.read(lambda r: r.charge_points.list_charge_points())
    assert [(p.id, p.connected, p.connected_since) for p in points] == [
        ("CP-1", False, None),
        ("CP-2", False, None),
        ("CP-3", False, None),
    ]


async def test_remove_charge_point_cascades_connectors(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")
    await add_charge_point(store, "CP-2")

    def connectors(r: Repositories) -> None:
        for cp in ("CP-1", "CP-2"):
            r.charge_points.update_connector(connector(cp, 0))
            r.charge_points.update_connector(connector(cp, 1))

    await store.write(connectors)

    assert await store.write(lambda r: r.charge_points.remove("CP-1")) is True

    assert await store.read(lambda r: r.charge_points.get("CP-1")) is None
    assert await store.read(lambda r: r.charge_points.list_connectors("CP-1")) == []
    assert await store.read(lambda r: r.charge_points.get_connector("CP-1", 1)) is None
    assert len(await store.read(lambda r: r.charge_points.list_connectors("CP-2"))) == 2
    assert await store.write(lambda r: r.charge_points.remove("CP-1")) is False
    # The id is free again.
    await add_charge_point(store, "CP-1")
    assert await store.read(lambda r: r.charge_points.list_connectors("CP-1")) == []


async def test_list_charge_points_includes_sorted_connectors(store: SqlStore) -> None:
    for cp in ("CP-B", "CP-A", "CP-C"):
        await add_charge_point(store, cp)

    def connectors(r: Repositories) -> None:
        for connector_id in (2, 0, 1):
            r.charge_points.update_connector(connector("CP-A", connector_id))
        r.charge_points.update_connector(connector("CP-C", 1, "Faulted"))

    await store.write(connectors)

    points = await store.read(lambda r: r.charge_points.list_charge_points())
    assert [p.id for p in points] == ["CP-A", "CP-B", "CP-C"]
    assert [c.connector_id for c in points[0].connectors] == [0, 1, 2]
    assert all(c.charge_point_id == "CP-A" for c in points[0].connectors)
    assert points[1].connectors == []
    assert [(c.connector_id, c.status) for c in points[2].connectors] == [(1, "Faulted")]


# ---------------------------------------------------------------------- connectors


async def test_update_connector_inserts_then_updates(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")
    assert await store.read(lambda r: r.charge_points.get_connector("CP-1", 1)) is None

    first = Connector(
        "CP-1",
        1,
        "Faulted",
        "GroundFailure",
        info="RCD tripped",
        vendor_id="com.acme",
        vendor_error_code="E42",
        status_timestamp=at(1),
        updated_at=at(2),
    )
    await store.write(lambda r: r.charge_points.update_connector(first))
    stored = await store.read(lambda r: r.charge_points.get_connector("CP-1", 1))
    assert stored == first

    second = Connector("CP-1", 1, "Available", "NoError", status_timestamp=at(3), updated_at=at(4))
    await store.write(lambda r: r.charge_points.update_connector(second))
    stored = await store.read(lambda r: r.charge_points.get_connector("CP-1", 1))
    assert stored == second  # info, vendor fields cleared
    assert await store.read(lambda r: r.charge_points.list_connectors("CP-1")) == [second]


async def test_a_group_upserts_its_connectors_together_and_in_order(store: SqlStore) -> None:
    """A group's connector upserts are deferred to its end and sent together (one
    executemany: on PostgreSQL one round trip), in the units' order: the last wins."""
    await add_charge_point(store, "CP-1")
    with executed(store, "INSERT INTO connectors") as upserts:
        commits_before = store.commits
        await asyncio.gather(
            *(
                store.write(
                    lambda r, n=n: r.charge_points.update_connector(connector("CP-1", 1, f"S{n}"))
                )
                for n in range(30)
            )
        )
        groups = store.commits - commits_before

    assert groups < 30
    assert len(upserts) == groups
    stored = await store.read(lambda r: r.charge_points.get_connector("CP-1", 1))
    assert stored == connector("CP-1", 1, "S29")


async def test_a_unit_of_work_reads_the_connector_it_updated(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")

    def work(r: Repositories) -> tuple[Connector | None, list[Connector]]:
        r.charge_points.update_connector(connector("CP-1", 1, "Charging"))
        return r.charge_points.get_connector("CP-1", 1), r.charge_points.list_connectors("CP-1")

    got, listed = (await asyncio.gather(store.write(work), store.write(lambda r: None)))[0]
    assert got == connector("CP-1", 1, "Charging")
    assert listed == [connector("CP-1", 1, "Charging")]


async def test_list_connectors(store: SqlStore) -> None:
    await add_charge_point(store, "CP-1")
    await add_charge_point(store, "CP-2")

    def work(r: Repositories) -> None:
        for connector_id in (3, 1, 2):
            r.charge_points.update_connector(connector("CP-1", connector_id))
        r.charge_points.update_connector(connector("CP-2", 1))

    await store.write(work)
    listed = await store.read(lambda r: r.charge_points.list_connectors("CP-1"))
    assert [c.connector_id for c in listed] == [1, 2, 3]
    assert listed[0] == connector("CP-1", 1)
    assert await store.read(lambda r: r.charge_points.list_connectors("CP-9")) == []


async def test_status_history_newest_first_with_filter_and_limit(store: SqlStore) -> None:
    def record(cp: str, connector_id: int, n: int) -> StatusRecord:
        return StatusRecord(
            charge_point_id=cp,
            connector_id=connector_id,
            status=f"S{n}",
            error_code="NoError",
            info=None if n % 2 else f"info {n}",
            vendor_id=None,
            vendor_error_code=None,
            timestamp=None if n == 0 else at(n),
            received_at=at(100 + n),
        )

    records = [record("CP-1", 1 + n % 2, n) for n in range(6)] + [record("CP-2", 1, 99)]

    def add_all(r: Repositories) -> None:
        for item in records:
            r.charge_points.add_status(item)

    await store.write(add_all)

    history = await store.read(lambda r: r.charge_points.list_status_history("CP-1"))
    assert history == list(reversed(records[:6]))
    assert history[-1].timestamp is None
    assert_utc(history[0].received_at, at(105))

    only_2 = await store.read(lambda r: r.charge_points.list_status_history("CP-1", connector_id=2))
    assert [item.status for item in only_2] == ["S5", "S3", "S1"]

    limited = await store.read(lambda r: r.charge_points.list_status_history("CP-1", limit=2))
    assert [item.status for item in limited] == ["S5", "S4"]

    limited_2 = await store.read(
        lambda r: r.charge_points.list_status_history("CP-1", connector_id=1, limit=1)
    )
    assert [item.status for item in limited_2] == ["S4"]
    assert await store.read(lambda r: r.charge_points.list_status_history("CP-9")) == []


# ------------------------------------------------------------------------- id tags


async def test_add_and_get_id_tag_with_expiry_in_utc(store: SqlStore) -> None:
    expiry = datetime(2030, 1, 1, 1, 30, 0, 123456, tzinfo=CEST)
    tag = IdTag(
        "TAG-1",
        AuthorizationStatus.ACCEPTED,
        expiry_date=expiry,
        parent_id_tag="GROUP-1",
        owner="Alice",
        note="spare card",
        max_concurrent_transactions=2,
    )
    await store.write(lambda r: r.id_tags.add(tag, T0))

    stored = await store.read(lambda r: r.id_tags.get("TAG-1"))
    assert stored is not None
    assert_utc(stored.expiry_date, expiry)
    assert stored.expiry_date is not None
    assert stored.expiry_date.hour == 23  # 01:30 at +02:00 is 23:30 UTC the day before
    assert stored.status is AuthorizationStatus.ACCEPTED
    assert (stored.parent_id_tag, stored.owner, stored.note) == ("GROUP-1", "Alice", "spare card")
    assert stored.max_concurrent_transactions == 2
    assert_utc(stored.created_at, T0)
    assert await store.read(lambda r: r.id_tags.get("TAG-2")) is None


async def test_add_duplicate_id_tag_raises_already_exists(store: SqlStore) -> None:
    await store.write(lambda r: r.id_tags.add(IdTag("TAG-1", owner="first"), T0))

    with pytest.raises(AlreadyExists):
        await store.write(lambda r: r.id_tags.add(IdTag("TAG-1", owner="second"), T0))

    stored = await store.read(lambda r: r.id_tags.get("TAG-1"))
    assert stored is not None
    assert stored.owner == "first"


async def test_update_id_tag(store: SqlStore) -> None:
    expiry = at(3600)
    await store.write(lambda r: r.id_tags.add(IdTag("TAG-1", expiry_date=expiry), T0))

    changed = await store.write(
        lambda r: r.id_tags.update(
            "TAG-1", at(1), status=AuthorizationStatus.BLOCKED, owner="Bob", expiry_date=None
        )
    )
    assert changed is True
    stored = await store.read(lambda r: r.id_tags.get("TAG-1"))
    assert stored is not None
    assert stored.status is AuthorizationStatus.BLOCKED
    assert stored.owner == "Bob"
    assert stored.expiry_date is None

    await store.write(lambda r: r.id_tags.update("TAG-1", at(2), expiry_date=expiry))
    stored = await store.read(lambda r: r.id_tags.get("TAG-1"))
    assert stored is not None
    assert_utc(stored.expiry_date, expiry)
    assert stored.status is AuthorizationStatus.BLOCKED

    assert await store.write(lambda r: r.id_tags.update("TAG-9", at(1), owner="x")) is False


async def test_list_id_tags_ordered_with_pagination(store: SqlStore) -> None:
    names = ["TAG-C", "TAG-A", "TAG-E", "TAG-B", "TAG-D"]

    def work(r: Repositories) -> None:
        for name in names:
            r.id_tags.add(IdTag(name), T0)

    await store.write(work)

    def ids(tags: list[IdTag]) -> list[str]:
        return [tag.id_tag for tag in tags]

    assert ids(await store.read(lambda r: r.id_tags.list_id_tags())) == sorted(names)
    assert ids(await store.read(lambda r: r.id_tags.list_id_tags(limit=2))) == ["TAG-A", "TAG-B"]
    page = await store.read(lambda r: r.id_tags.list_id_tags(limit=2, offset=3))
    assert ids(page) == ["TAG-D", "TAG-E"]
    assert await store.read(lambda r: r.id_tags.list_id_tags(offset=5)) == []


async def test_remove_id_tag(store: SqlStore) -> None:
    await store.write(lambda r: r.id_tags.add(IdTag("TAG-1"), T0))
    await store.write(lambda r: r.id_tags.add(IdTag("TAG-2"), T0))

    assert await store.write(lambda r: r.id_tags.remove("TAG-1")) is True
    assert await store.write(lambda r: r.id_tags.remove("TAG-1")) is False
    assert await store.read(lambda r: r.id_tags.get("TAG-1")) is None
    tags = await store.read(lambda r: r.id_tags.list_id_tags())
    assert [tag.id_tag for tag in tags] == ["TAG-2"]


# -------------------------------------------------------------------- transactions


async def test_add_transaction_returns_increasing_ids_from_one(store: SqlStore) -> None:
    # One connector each: a connector has at most one active transaction (0004).
    ids = [await add_transaction(store, meter_start=n, connector_id=n + 3) for n in range(3)]
    assert ids == [1, 2, 3]

    second = new_transaction(
        connector_id=2,
        reservation_id=7,
        start_status=AuthorizationStatus.CONCURRENT_TX,
        flags=("remote-start", "late"),
    )
    tx_id = await store.write(lambda r: r.transactions.add(second, at(1)))
    assert tx_id == 4

    stored = await store.read(lambda r: r.transactions.get(tx_id))
    assert stored is not None
    assert stored.id == 4
    assert (stored.charge_point_id, stored.connector_id, stored.id_tag) == ("CP-1", 2, "TAG-1")
    assert stored.meter_start == 1000
    assert_utc(stored.started_at, T0)
    assert stored.state is TransactionState.ACTIVE
    assert stored.start_status is AuthorizationStatus.CONCURRENT_TX
    assert stored.reservation_id == 7
    assert stored.flags == ("remote-start", "late")
    assert (stored.meter_stop, stored.stopped_at, stored.stop_reason) == (None, None, None)
    assert (stored.stop_id_tag, stored.energy_wh) == (None, None)
    assert_utc(stored.created_at, at(1))
    assert await store.read(lambda r: r.transactions.get(99)) is None


async def test_add_transaction_ignores_the_given_id(store: SqlStore) -> None:
    transaction = new_transaction()
    transaction.id = 42
    assert await store.write(lambda r: r.transactions.add(transaction, T0)) == 1


async def test_find_started_matches_exactly_on_the_five_keys(store: SqlStore) -> None:
    started = datetime(2025, 3, 14, 11, 26, 53, 589793, tzinfo=CEST)  # == T0
    tx_id = await add_transaction(
        store, charge_point_id="CP-1", connector_id=1, id_tag="TAG-1", started_at=started
    )
    keys: dict[str, Any] = {
        "charge_point_id": "CP-1",
        "connector_id": 1,
        "id_tag": "TAG-1",
        "started_at": T0,
        "meter_start": 1000,
    }

    found = await store.read(lambda r: r.transactions.find_started(**keys))
    assert found is not None
    assert found.id == tx_id

    differing: dict[str, Any] = {
        "charge_point_id": "CP-2",
        "connector_id": 2,
        "id_tag": "TAG-2",
        "started_at": T0 + timedelta(microseconds=1),
        "meter_start": 1001,
    }
    for key, value in differing.items():
        other = {**keys, key: value}
        assert await store.read(lambda r, o=other: r.transactions.find_started(**o)) is None, key


async def test_list_active_filters(store: SqlStore) -> None:
    # Stopped first: a connector has at most one active transaction (0004).
    done = await add_transaction(store, charge_point_id="CP-1", connector_id=1, meter_start=5)
    await stop(store, done)
    a = await add_transaction(store, charge_point_id="CP-1", connector_id=1)
    b = await add_transaction(store, charge_point_id="CP-1", connector_id=2)
    c = await add_transaction(store, charge_point_id="CP-2", connector_id=1)

    async def active(**filters: Any) -> list[int]:
        found = await store.read(lambda r: r.transactions.list_active(**filters))
        assert all(tx.state is TransactionState.ACTIVE for tx in found)
        return [tx.id for tx in found]

    assert await active() == [a, b, c]
    assert await active(charge_point_id="CP-1") == [a, b]
    assert await active(charge_point_id="CP-1", connector_id=2) == [b]
    assert await active(connector_id=1) == [a, c]
    assert await active(charge_point_id="CP-9") == []


async def test_count_active_for_tag(store: SqlStore) -> None:
    first = await add_transaction(store, id_tag="TAG-1", connector_id=1)
    await add_transaction(store, id_tag="TAG-1", connector_id=2)
    await add_transaction(store, id_tag="TAG-2", connector_id=3)

    assert await store.read(lambda r: r.transactions.count_active_for_tag("TAG-1")) == 2
    await stop(store, first)
    assert await store.read(lambda r: r.transactions.count_active_for_tag("TAG-1")) == 1
    assert await store.read(lambda r: r.transactions.count_active_for_tag("TAG-9")) == 0


async def test_find_for_start_is_find_started_and_list_active_in_one(store: SqlStore) -> None:
    keys: dict[str, Any] = {
        "charge_point_id": "CP-1",
        "connector_id": 1,
        "id_tag": "TAG-1",
        "started_at": at(30),
        "meter_start": 1000,
    }

    async def both() -> tuple[Any, Any]:
        combined = await store.read(lambda r: r.transactions.find_for_start(**keys))
        separate = await store.read(
            lambda r: (
                r.transactions.find_started(**keys),
                r.transactions.list_active(charge_point_id="CP-1", connector_id=1),
            )
        )
        assert combined == separate
        return combined

    assert await both() == (None, [])

    await add_transaction(store, connector_id=2)  # other connector
    await add_transaction(store, charge_point_id="CP-2")  # other charge point
    await stop(store, await add_transaction(store, started_at=at(0)))
    zombie = await add_transaction(store, id_tag="TAG-2", started_at=at(20))
    started, active = await both()
    assert started is None
    assert [tx.id for tx in active] == [zombie]

    await stop(store, zombie, TransactionState.ABANDONED)
    created = await add_transaction(store, **keys)
    started, active = await both()
    assert started is not None
    assert started.id == created
    assert [tx.id for tx in active] == [created]

    await stop(store, created)  # a stopped one is still found, and no longer active
    started, active = await both()
    assert started is not None
    assert (started.id, started.state) == (created, TransactionState.COMPLETED)
    assert active == []


async def test_get_with_active_count(store: SqlStore) -> None:
    await store.write(lambda r: r.id_tags.add(IdTag("TAG-1", owner="Alice"), T0))
    await store.write(lambda r: r.id_tags.add(IdTag("TAG-2"), T0))
    first = await add_transaction(store, id_tag="TAG-1", connector_id=1)
    await add_transaction(store, id_tag="TAG-1", connector_id=2)
    await add_transaction(store, id_tag="TAG-3", connector_id=3)  # a tag we do not know
    await stop(store, await add_transaction(store, id_tag="TAG-1", connector_id=4))

    async def read(id_tag: str) -> tuple[str | None, int]:
        tag, count = await store.read(lambda r: r.id_tags.get_with_active_count(id_tag))
        expected = await store.read(lambda r: r.id_tags.get(id_tag))
        assert tag == expected
        return None if tag is None else tag.owner, count

    assert await read("TAG-1") == ("Alice", 2)
    assert await read("TAG-2") == (None, 0)
    assert await read("TAG-3") == (None, 0)  # unknown: no tag, whatever it runs
    await stop(store, first)
    assert await read("TAG-1") == ("Alice", 1)


async def stop(
    store: SqlStore, transaction_id: int, state: TransactionState = TransactionState.COMPLETED
) -> None:
    await store.write(
        lambda r: r.transactions.stop(
            transaction_id,
            state=state,
            meter_stop=1500,
            stopped_at=at(60),
            reason="Local",
            stop_id_tag="TAG-1",
            energy_wh=500,
            flags=("stop-late",),
            now=at(61),
        )
    )


async def test_stop_sets_fields_and_state(store: SqlStore) -> None:
    tx_id = await add_transaction(store, flags=("remote-start",))
    other = await add_transaction(store, connector_id=2)

    await stop(store, tx_id)

    stored = await store.read(lambda r: r.transactions.get(tx_id))
    assert stored is not None
    assert stored.state is TransactionState.COMPLETED
    assert stored.meter_stop == 1500
    assert_utc(stored.stopped_at, at(60))
    assert stored.stop_reason == "Local"
    assert stored.stop_id_tag == "TAG-1"
    assert stored.energy_wh == 500
    assert stored.flags == ("stop-late",)
    assert stored.meter_start == 1000  # untouched

    untouched = await store.read(lambda r: r.transactions.get(other))
    assert untouched is not None
    assert untouched.state is TransactionState.ACTIVE

    await store.write(
        lambda r: r.transactions.stop(
            other,
            state=TransactionState.ABANDONED,
            meter_stop=None,
            stopped_at=at(70),
            reason=None,
            stop_id_tag=None,
            energy_wh=None,
            flags=(),
            now=at(70),
        )
    )
    abandoned = await store.read(lambda r: r.transactions.get(other))
    assert abandoned is not None
    assert abandoned.state is TransactionState.ABANDONED
    assert (abandoned.meter_stop, abandoned.energy_wh, abandoned.flags) == (None, None, ())
    assert await store.read(lambda r: r.transactions.list_active()) == []


async def test_list_transactions_filters_and_pages_newest_first(store: SqlStore) -> None:
    specs = [  # (charge point, id tag, started after T0 in seconds)
        ("CP-1", "TAG-1", 0),
        ("CP-1", "TAG-2", 10),
        ("CP-2", "TAG-1", 20),
        ("CP-1", "TAG-1", 30),
        ("CP-2", "TAG-2", 40),
    ]
    ids = [  # one connector each: at most one active transaction per connector (0004)
        await add_transaction(
            store, charge_point_id=cp, id_tag=tag, started_at=at(seconds), connector_id=n
        )
        for n, (cp, tag, seconds) in enumerate(specs, start=1)
    ]
    await stop(store, ids[1])
    await stop(store, ids[2], TransactionState.ABANDONED)

    async def listed(**filters: Any) -> list[int]:
        found = await store.read(lambda r: r.transactions.list_transactions(**filters))
        return [tx.id for tx in found]

    assert await listed() == [5, 4, 3, 2, 1]
    assert await listed(charge_point_id="CP-1") == [4, 2, 1]
    assert await listed(id_tag="TAG-1") == [4, 3, 1]
    assert await listed(charge_point_id="CP-2", id_tag="TAG-2") == [5]
    assert await listed(state=TransactionState.ACTIVE) == [5, 4, 1]
    assert await listed(state=TransactionState.COMPLETED) == [2]
    assert await listed(state=TransactionState.ABANDONED) == [3]
    # since is inclusive, until exclusive; the bounds may be in any time zone.
    assert await listed(since=at(10)) == [5, 4, 3, 2]
    assert await listed(until=at(30)) == [3, 2, 1]
    assert await listed(since=at(10), until=at(30).astimezone(CEST)) == [3, 2]
    assert await listed(since=at(10) + timedelta(microseconds=1)) == [5, 4, 3]
    assert await listed(limit=2) == [5, 4]
    assert await listed(limit=2, offset=2) == [3, 2]
    assert await listed(limit=2, offset=4) == [1]
    assert await listed(offset=5) == []
    assert await listed(charge_point_id="CP-1", state=TransactionState.ACTIVE, limit=1) == [4]


async def test_add_unknown_stop_keeps_each_stop_once(store: SqlStore) -> None:
    stop_1 = UnknownStop(
        charge_point_id="CP-1",
        transaction_id=777,
        id_tag="TAG-1",
        meter_stop=5000,
        timestamp=at(1),
        reason="EVDisconnected",
        received_at=at(2),
    )
    assert await store.write(lambda r: r.transactions.add_unknown_stop(stop_1)) is True
    assert await store.write(lambda r: r.transactions.add_unknown_stop(stop_1)) is False
    retransmitted = UnknownStop(**{**_fields(stop_1), "received_at": at(9)})
    assert await store.write(lambda r: r.transactions.add_unknown_stop(retransmitted)) is False

    stop_2 = UnknownStop(**{**_fields(stop_1), "meter_stop": 5001, "id_tag": None})
    assert await store.write(lambda r: r.transactions.add_unknown_stop(stop_2)) is True

    kept = await store.read(lambda r: r.transactions.list_unknown_stops())
    assert kept == [stop_2, stop_1]  # newest first
    assert await store.read(lambda r: r.transactions.list_unknown_stops(limit=1)) == [stop_2]


def _fields(stop: UnknownStop) -> dict[str, Any]:
    return {name: getattr(stop, name) for name in UnknownStop.__slots__}


# -------------------------------------------------------------------- meter values


async def test_add_many_stores_nothing_twice(store: SqlStore) -> None:
    batch = [
        sample(0, "100"),
        sample(0, "7.5", measurand="Power.Active.Import"),
        sample(60, "200"),
    ]
    await store.write(lambda r: r.meter_values.add_many(batch, at(1)))
    await store.write(lambda r: r.meter_values.add_many(batch, at(2)))  # retransmitted
    await store.write(lambda r: r.meter_values.add_many([*batch, sample(120, "300")], at(3)))
    await store.write(lambda r: r.meter_values.add_many([sample(180, "4"), sample(180, "4")], T0))

    stored = await store.read(lambda r: r.meter_values.list_for_transaction(1))
    assert [(s.timestamp, s.measurand, s.raw_value) for s in stored] == [
        (at(0), "Energy.Active.Import.Register", "100"),
        (at(0), "Power.Active.Import", "7.5"),
        (at(60), "Energy.Active.Import.Register", "200"),
        (at(120), "Energy.Active.Import.Register", "300"),
        (at(180), "Energy.Active.Import.Register", "4"),
    ]


async def test_add_many_keeps_each_meter_value_s_own_timestamp(store: SqlStore) -> None:
    # Parsed samples of one meterValue share one timestamp object (converted once
    # for all of them); the next meterValue's samples have their own.
    samples = parse_meter_values(
        "CP-1",
        1,
        1,
        [
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "sampledValue": [{"value": "1"}, {"value": "2", "measurand": "SoC"}],
            },
            {
                "timestamp": "2026-01-01T00:01:00+01:00",
                "sampledValue": [{"value": "3"}, {"value": "4", "measurand": "SoC"}],
            },
        ],
    )
    await store.write(lambda r: r.meter_values.add_many(samples, at(1)))
    stored = await store.read(lambda r: r.meter_values.list_for_transaction(1))
    first = datetime(2026, 1, 1, tzinfo=UTC)
    second = datetime(2025, 12, 31, 23, 1, tzinfo=UTC)
    assert sorted((s.timestamp, s.raw_value) for s in stored) == [
        (second, "3"),
        (second, "4"),
        (first, "1"),
        (first, "2"),
    ]


async def test_add_many_stores_nothing_twice_without_transaction_id(store: SqlStore) -> None:
    batch = [sample(0, "100", transaction_id=None), sample(60, "200", transaction_id=None)]

    await store.write(lambda r: r.meter_values.add_many(batch, at(1)))
    await store.write(lambda r: r.meter_values.add_many(batch, at(2)))
    # The same sample for a transaction is a different sample.
    await store.write(lambda r: r.meter_values.add_many([sample(0, "100")], at(3)))

    stored = await store.read(lambda r: r.meter_values.list_for_charge_point("CP-1"))
    assert sorted((s.transaction_id or 0, s.timestamp) for s in stored) == [
        (0, at(0)),
        (0, at(60)),
        (1, at(0)),
    ]


async def test_add_many_in_one_group_stores_each_sample_once(store: SqlStore) -> None:
    """Units of work of one group that store the same samples (a retransmission that
    arrives while the first is being committed) store each sample once."""
    commits_before = store.commits
    batch = [sample(0, "100"), sample(0, "7.5", measurand="Power.Active.Import")]

    def unit(n: int) -> Any:
        # Every unit repeats the batch, adds its own sample twice and its
        # neighbour's once.
        own = [sample(60 * (n + 1), str(n)), sample(60 * (n + 1), str(n))]
        neighbour = [sample(60 * (n + 2), str(n + 1))]
        return lambda r: r.meter_values.add_many([*batch, *own, *neighbour], at(n))

    results = await asyncio.gather(*(store.write(unit(n)) for n in range(20)))

    assert results == [None] * 20
    assert store.commits - commits_before < 20  # they did share commits
    stored = await store.read(lambda r: r.meter_values.list_for_transaction(1))
    expected = [
        (at(0), "Energy.Active.Import.Register", "100"),
        (at(0), "Power.Active.Import", "7.5"),
    ]
    expected += [(at(60 * (n + 1)), "Energy.Active.Import.Register", str(n)) for n in range(21)]
    assert [(s.timestamp, s.measurand, s.raw_value) for s in stored] == expected


async def test_list_for_transaction_ordered_by_timestamp(store: SqlStore) -> None:
    batch = [
        sample(120, "3"),
        sample(0, "1"),
        sample(60, "2"),
        sample(30, "9", transaction_id=2),
        sample(90, "8", transaction_id=None),
    ]
    await store.write(lambda r: r.meter_values.add_many(batch, at(1)))

    stored = await store.read(lambda r: r.meter_values.list_for_transaction(1))
    assert [s.raw_value for s in stored] == ["1", "2", "3"]
    assert stored == sorted(batch[:3], key=lambda s: s.timestamp)
    assert await store.read(lambda r: r.meter_values.list_for_transaction(3)) == []


async def test_list_for_charge_point_newest_first_with_limit(store: SqlStore) -> None:
    await store.write(lambda r: r.meter_values.add_many([sample(0, "1")], at(1)))
    await store.write(lambda r: r.meter_values.add_many([sample(60, "2")], at(2)))
    other = sample(30, "x", charge_point_id="CP-2")
    await store.write(lambda r: r.meter_values.add_many([other], at(3)))

    stored = await store.read(lambda r: r.meter_values.list_for_charge_point("CP-1"))
    assert [s.raw_value for s in stored] == ["2", "1"]
    limited = await store.read(lambda r: r.meter_values.list_for_charge_point("CP-1", limit=1))
    assert [s.raw_value for s in limited] == ["2"]


async def test_meter_values_keep_raw_text_and_decimal_value(store: SqlStore) -> None:
    batch = [
        sample(0, "0012.50"),
        sample(1, "0.1"),
        sample(2, "123456789012.123456789"),
        sample(3, "-1E+3", measurand="Current.Import"),
        sample(4, "not a number", measurand="Voltage"),
        sample(5, "NaN", measurand="Temperature"),
    ]
    await store.write(lambda r: r.meter_values.add_many(batch, at(10)))

    stored = await store.read(lambda r: r.meter_values.list_for_transaction(1))
    assert [s.raw_value for s in stored] == [s.raw_value for s in batch]
    assert all(s.value is None or isinstance(s.value, Decimal) for s in stored)
    values = [s.value for s in stored]
    assert values == [
        Decimal("12.50"),
        Decimal("0.1"),
        Decimal("123456789012.123456789"),
        Decimal("-1000"),
        None,
        None,
    ]
    assert str(stored[0].value) == "12.50"  # exact, not via a float
    assert stored == batch


async def test_meter_value_phase_roundtrips_and_is_part_of_the_key(store: SqlStore) -> None:
    batch = [
        sample(0, "230.1", measurand="Voltage", phase=None),
        sample(0, "230.2", measurand="Voltage", phase="L1"),
        sample(0, "230.3", measurand="Voltage", phase="L2-N"),
    ]
    await store.write(lambda r: r.meter_values.add_many(batch, at(1)))

    stored = await store.read(lambda r: r.meter_values.list_for_transaction(1))
    assert {s.raw_value: s.phase for s in stored} == {"230.1": None, "230.2": "L1", "230.3": "L2-N"}
    assert sorted(stored, key=lambda s: s.raw_value) == batch


# ----------------------------------------------------------------------- datetimes


async def test_datetimes_with_microseconds_roundtrip_exactly(store: SqlStore) -> None:
    instants = [
        datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 2, 29, 0, 0, 0, 1, tzinfo=CEST),
        datetime(2025, 6, 1, 12, 0, 0, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ]
    for n, instant in enumerate(instants):
        cp = f"CP-{n}"
        await store.write(lambda r, cp=cp, i=instant: r.charge_points.add(ChargePoint(cp), i))
        await store.write(lambda r, cp=cp, i=instant: r.charge_points.touch([(cp, i)]))
        tx_id = await add_transaction(store, charge_point_id=cp, started_at=instant)
        tx_sample = MeterSample(cp, 1, tx_id, instant, "1", Decimal(1))
        await store.write(lambda r, s=tx_sample, i=instant: r.meter_values.add_many([s], i))

        point = await store.read(lambda r, cp=cp: r.charge_points.get(cp))
        assert point is not None
        assert_utc(point.created_at, instant)
        assert_utc(point.last_seen_at, instant)
        assert point.last_seen_at is not None
        assert point.last_seen_at.microsecond == instant.microsecond
        tx = await store.read(lambda r, tx_id=tx_id: r.transactions.get(tx_id))
        assert tx is not None
        assert_utc(tx.started_at, instant)
        (stored,) = await store.read(
            lambda r, tx_id=tx_id: r.meter_values.list_for_transaction(tx_id)
        )
        assert_utc(stored.timestamp, instant)


async def test_naive_datetime_is_refused(store: SqlStore) -> None:
    naive = datetime(2025, 1, 1, 12, 0, 0)  # no tzinfo: the point of the test
    with pytest.raises(StatementError, match="naive datetime"):
        await store.write(lambda r: r.charge_points.add(ChargePoint("CP-1"), naive))
    assert await store.read(lambda r: r.charge_points.get("CP-1")) is None


NAIVE = datetime(2025, 1, 1, 12, 0, 0)  # no tzinfo: the point of these tests


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda r: r.meter_values.add_many([sample(0, "1")], NAIVE), id="add_many_received"
        ),
        pytest.param(
            lambda r: r.meter_values.add_many(
                [MeterSample("CP-1", 1, 1, NAIVE, "1", Decimal(1))], T0
            ),
            id="add_many_timestamp",
        ),
        pytest.param(
            lambda r: r.charge_points.update_connector(
                Connector("CP-1", 1, "Available", "NoError", status_timestamp=NAIVE, updated_at=T0)
            ),
            id="update_connector",
        ),
        pytest.param(
            lambda r: r.charge_points.add_status(
                StatusRecord("CP-1", 1, "Available", "NoError", None, None, None, T0, NAIVE)
            ),
            id="add_status",
        ),
        pytest.param(lambda r: r.charge_points.touch([("CP-1", NAIVE)]), id="touch"),
        pytest.param(
            lambda r: r.transactions.add(new_transaction(started_at=NAIVE), T0),
            id="add_transaction",
        ),
        pytest.param(
            lambda r: r.transactions.stop(
                1,
                state=TransactionState.COMPLETED,
                meter_stop=2,
                stopped_at=NAIVE,
                reason=None,
                stop_id_tag=None,
                energy_wh=1,
                flags=(),
                now=T0,
            ),
            id="stop",
        ),
    ],
)
async def test_naive_datetime_is_refused_on_every_path(store: SqlStore, write: Any) -> None:
    await add_charge_point(store, "CP-1")
    await add_transaction(store)

    def unit(r: Repositories) -> None:
        r.id_tags.add(IdTag("TAG-1"), T0)
        write(r)

    with pytest.raises(StatementError, match="naive datetime"):
        await store.write(unit)
    assert await store.read(lambda r: r.id_tags.get("TAG-1")) is None  # rolled back
    assert await store.read(lambda r: r.meter_values.list_for_transaction(1)) == []
    assert await store.read(lambda r: r.charge_points.list_connectors("CP-1")) == []
    assert await store.read(lambda r: r.charge_points.list_status_history("CP-1")) == []
    tx = await store.read(lambda r: r.transactions.get(1))
    assert tx is not None
    assert tx.state is TransactionState.ACTIVE


# -------------------------------------------------------------- units of work, groups


async def test_group_commit_many_concurrent_writes(store: SqlStore) -> None:
    commits_before = store.commits

    def work(n: int) -> Any:
        def unit(r: Repositories) -> tuple[int, str | None]:
            r.id_tags.add(IdTag(f"TAG-{n:02d}", owner=f"owner {n}"), T0)
            tag = r.id_tags.get(f"TAG-{n:02d}")
            return n, None if tag is None else tag.owner

        return unit

    results = await asyncio.gather(*(store.write(work(n)) for n in range(50)))

    assert results == [(n, f"owner {n}") for n in range(50)]
    assert 1 <= store.commits - commits_before < 50
    tags = await store.read(lambda r: r.id_tags.list_id_tags())
    assert [tag.id_tag for tag in tags] == [f"TAG-{n:02d}" for n in range(50)]


async def test_group_larger_than_max_group_is_split(store: SqlStore) -> None:
    commits_before = store.commits
    count = MAX_GROUP + 10

    results = await asyncio.gather(
        *(store.write(lambda r, n=n: (n, r.id_tags.get("nobody"))) for n in range(count))
    )

    assert results == [(n, None) for n in range(count)]
    assert 2 <= store.commits - commits_before < count


async def test_failing_unit_of_work_in_a_group_fails_alone(store: SqlStore) -> None:
    await store.write(lambda r: r.id_tags.add(IdTag("TAKEN"), T0))
    commits_before = store.commits

    class Boom(Exception):
        pass

    def work(n: int) -> Any:
        def unit(r: Repositories) -> int:
            r.id_tags.add(IdTag(f"TAG-{n:02d}"), T0)
            if n == 7:
                r.id_tags.add(IdTag("TAKEN"), T0)  # AlreadyExists
            if n == 12:
                raise Boom
            return n

        return unit

    results = await asyncio.gather(
        *(store.write(work(n)) for n in range(20)), return_exceptions=True
    )

    assert isinstance(results[7], AlreadyExists)
    assert isinstance(results[12], Boom)
    assert [result for n, result in enumerate(results) if n not in (7, 12)] == [
        n for n in range(20) if n not in (7, 12)
    ]
    tags = {tag.id_tag for tag in await store.read(lambda r: r.id_tags.list_id_tags())}
    assert tags == {"TAKEN"} | {f"TAG-{n:02d}" for n in range(20) if n not in (7, 12)}
    assert store.commits > commits_before


async def test_a_group_inserts_its_meter_values_and_statuses_with_one_statement_each(
    store: SqlStore,
) -> None:
    with executed(store, "INSERT INTO meter_values", "INSERT INTO status_history") as seen:
        commits_before = store.commits

        def unit(n: int) -> Any:
            def work(r: Repositories) -> None:
                r.meter_values.add_many([sample(n, "1"), sample(n, "2", measurand="SoC")], at(n))
                r.charge_points.add_status(status_record(n))

            return work

        await asyncio.gather(*(store.write(unit(n)) for n in range(30)))
        groups = store.commits - commits_before

    inserts = [statement.split()[2] for statement, _ in seen]
    assert groups < 30
    if store.dialect == "sqlite":
        # Multi-row INSERTs of 2**k rows each (MultiRowInsert): a few per group.
        most = groups * MULTI_ROW_MAX.bit_length()
        assert groups <= inserts.count("meter_values") <= most
        assert groups <= inserts.count("status_history") <= most
        assert inserts.count("meter_values") < 30
    else:  # one INSERT … SELECT FROM unnest() per group and table, not an executemany
        assert inserts.count("meter_values") == groups
        assert inserts.count("status_history") == groups
        assert all("unnest(" in statement and not many for statement, many in seen)
    assert len(await store.read(lambda r: r.meter_values.list_for_charge_point("CP-1"))) == 60
    history = await store.read(lambda r: r.charge_points.list_status_history("CP-1", limit=100))
    assert history == [status_record(n) for n in reversed(range(30))]  # in the units' order


async def test_a_too_long_value_in_a_group_s_appends_is_refused_not_cut(store: SqlStore) -> None:
    # vendor_error_code is VARCHAR(50). PostgreSQL refuses a longer value in the
    # group's INSERT from unnest() as in a single-row one (an array cast to
    # VARCHAR(50)[] would have cut it silently); SQLite does not check lengths.
    long = replace(status_record(1), vendor_error_code="E" * 60)

    def work(r: Repositories) -> None:
        r.charge_points.add_status(status_record(0))
        r.charge_points.add_status(long)

    if store.dialect == "postgresql":
        with pytest.raises(DBAPIError, match="too long"):
            await store.write(work)
        assert await store.read(lambda r: r.charge_points.list_status_history("CP-1")) == []
    else:
        await store.write(work)
        history = await store.read(lambda r: r.charge_points.list_status_history("CP-1"))
        assert history == [long, status_record(0)]


def status_record(n: int, charge_point_id: str = "CP-1") -> StatusRecord:
    return StatusRecord(
        charge_point_id=charge_point_id,
        connector_id=1,
        status=f"S{n}",
        error_code="NoError",
        info=None,
        vendor_id=None,
        vendor_error_code=None,
        timestamp=at(n),
        received_at=at(n + 1),
    )


async def test_a_unit_of_work_reads_the_rows_it_appended(store: SqlStore) -> None:
    def unit(n: int) -> Any:
        def work(r: Repositories) -> tuple[list[str], list[str]]:
            cp = f"CP-{n}"
            r.meter_values.add_many([sample(0, str(n), charge_point_id=cp)], at(0))
            r.charge_points.add_status(status_record(n, cp))
            samples = r.meter_values.list_for_charge_point(cp)
            # Written once only, although listed before the group's commit.
            r.meter_values.add_many([sample(1, "x", charge_point_id=cp)], at(1))
            samples += r.meter_values.list_for_charge_point(cp)
            history = r.charge_points.list_status_history(cp)
            return [s.raw_value for s in samples], [h.status for h in history]

        return work

    results = await asyncio.gather(*(store.write(unit(n)) for n in range(10)))

    assert results == [([str(n), "x", str(n)], [f"S{n}"]) for n in range(10)]
    for n in range(10):
        stored = await store.read(lambda r, n=n: r.meter_values.list_for_charge_point(f"CP-{n}"))
        assert [s.raw_value for s in stored] == ["x", str(n)]


async def test_a_failing_group_insert_fails_only_its_unit_of_work(store: SqlStore) -> None:
    """The rows of a group are inserted after its last unit of work: if that fails,
    the group is run again one unit at a time, and only the guilty one fails."""
    bad = MeterSample("CP-1", 1, 1, at(0), "1", Decimal(1), measurand=None)  # type: ignore[arg-type]

    def unit(n: int) -> Any:
        def work(r: Repositories) -> int:
            r.charge_points.add_status(status_record(n))
            r.meter_values.add_many([sample(n, str(n))], at(n))
            if n == 5:
                r.meter_values.add_many([bad], at(n))  # NOT NULL measurand
            return n

        return work

    results = await asyncio.gather(
        *(store.write(unit(n)) for n in range(12)), return_exceptions=True
    )

    assert isinstance(results[5], IntegrityError)
    assert [result for n, result in enumerate(results) if n != 5] == [
        n for n in range(12) if n != 5
    ]
    stored = await store.read(lambda r: r.meter_values.list_for_transaction(1))
    assert [s.raw_value for s in stored] == [str(n) for n in range(12) if n != 5]
    history = await store.read(lambda r: r.charge_points.list_status_history("CP-1"))
    assert {h.status for h in history} == {f"S{n}" for n in range(12) if n != 5}


async def test_unit_of_work_that_raises_is_rolled_back(store: SqlStore) -> None:
    def unit(r: Repositories) -> None:
        r.charge_points.add(ChargePoint("CP-1"), T0)
        r.id_tags.add(IdTag("TAG-1"), T0)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await store.write(unit)

    assert await store.read(lambda r: r.charge_points.get("CP-1")) is None
    assert await store.read(lambda r: r.id_tags.get("TAG-1")) is None
    # The store goes on working after a rollback.
    tx_id = await add_transaction(store)
    assert await store.read(lambda r: r.transactions.get(tx_id)) is not None


async def test_read_after_write_sees_committed_data(store: SqlStore) -> None:
    for n in range(5):
        await store.write(lambda r, n=n: r.id_tags.add(IdTag(f"TAG-{n}"), T0))
        tag = await store.read(lambda r, n=n: r.id_tags.get(f"TAG-{n}"))
        assert tag is not None
        assert tag.id_tag == f"TAG-{n}"

    await store.write(lambda r: r.id_tags.update("TAG-0", at(1), owner="new"))
    tag = await store.read(lambda r: r.id_tags.get("TAG-0"))
    assert tag is not None
    assert tag.owner == "new"


async def test_concurrent_reads_and_writes(store: SqlStore) -> None:
    async def writer(n: int) -> None:
        await store.write(lambda r: r.id_tags.add(IdTag(f"TAG-{n:02d}"), T0))
        tag = await store.read(lambda r: r.id_tags.get(f"TAG-{n:02d}"))
        assert tag is not None

    await asyncio.gather(*(writer(n) for n in range(20)))
    assert len(await store.read(lambda r: r.id_tags.list_id_tags())) == 20


async def test_a_failing_read_leaves_the_readers_usable_and_up_to_date(store: SqlStore) -> None:
    """Readers keep their connections between reads: none may stay in a transaction
    (an old snapshot) after a read, whether it returned or raised."""

    def failing(r: Repositories) -> None:
        r.id_tags.get("TAG-0")
        raise LookupError("read failed")

    for n in range(6):  # more reads than reader threads, each after a write
        await store.write(lambda r, n=n: r.id_tags.add(IdTag(f"TAG-{n}"), T0))
        with pytest.raises(LookupError):
            await store.read(failing)
        tags = await asyncio.gather(
            *(store.read(lambda r: r.id_tags.list_id_tags()) for _ in range(4))
        )
        assert all(
            [tag.id_tag for tag in found] == [f"TAG-{m}" for m in range(n + 1)] for found in tags
        )


async def test_read_keeps_nothing_it_writes(store: SqlStore) -> None:
    """Store.read: "nothing it writes is kept"."""

    def sneaky(r: Repositories) -> None:
        r.id_tags.add(IdTag("TAG-1"), T0)

    await store.read(sneaky)

    assert await store.read(lambda r: r.id_tags.get("TAG-1")) is None


async def test_flush_seen_writes_in_chunks_that_other_writes_can_pass(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kilowatt.clock import FakeClock
    from kilowatt.services import charge_points as service_module

    monkeypatch.setattr(service_module, "SEEN_CHUNK", 2)
    ids = [f"CP-{n}" for n in range(5)]
    for cp in ids:
        await add_charge_point(store, cp)
    clock = FakeClock(at(100))
    service = service_module.ChargePointService(
        store,
        clock,
        boot_policy=service_module.BootPolicy.ACCEPT_ALL,
        heartbeat_interval=60,
        boot_retry_interval=60,
    )
    for cp in ids:
        service.seen(cp)
    units_before = store.units

    assert await service.flush_seen() == 5
    assert store.units - units_before == 3  # 2 + 2 + 1 charge points
    assert await service.flush_seen() == 0
    points = {p.id: p for p in await store.read(lambda r: r.charge_points.list_charge_points())}
    for cp in ids:
        assert_utc(points[cp].last_seen_at, at(100))
