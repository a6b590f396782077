"""The Core profile end to end, over a real socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from kilowatt.app import Application
from kilowatt.domain.models import (
    AuthorizationStatus,
    IdTag,
    Registration,
    TransactionState,
)
from kilowatt.services.data_transfer import DataTransferResult
from tests.ocpp16.conftest import StartApp, client

T0 = "2026-03-01T10:00:00Z"
T1 = "2026-03-01T10:15:00Z"
T2 = "2026-03-01T11:00:00Z"


def sample(value: str, **fields: str) -> dict[str, Any]:
    return {"value": value, **fields}


async def register(app: Application, charge_point_id: str = "CP1") -> None:
    await app.services.charge_points.register(charge_point_id)


async def add_tag(app: Application, id_tag: str = "TAG1", **fields: Any) -> None:
    await app.services.authorization.add(IdTag(id_tag=id_tag, **fields))


async def eventually(check: Any, what: str) -> None:
    async with asyncio.timeout(5):
        while not await check():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------- boot


async def test_full_charging_session_is_stored(app: Application) -> None:
    await register(app)
    await add_tag(app, "TAG1", parent_id_tag="GROUP", owner="Ada")
    async with client(app) as cp:
        boot = await cp.boot()
        assert boot["status"] == "Accepted"
        assert boot["interval"] == app.settings.heartbeat_interval
        assert (await cp.result("Heartbeat", {}))["currentTime"].endswith("Z")
        assert (
            await cp.result(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Preparing", "timestamp": T0},
            )
            == {}
        )
        authorized = await cp.result("Authorize", {"idTag": "TAG1"})
        assert authorized == {"idTagInfo": {"status": "Accepted", "parentIdTag": "GROUP"}}
        started = await cp.result(
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": T0},
        )
        transaction_id = started["transactionId"]
        assert started["idTagInfo"] == {"status": "Accepted", "parentIdTag": "GROUP"}
        meter = {
            "connectorId": 1,
            "transactionId": transaction_id,
            "meterValue": [
                {
                    "timestamp": T1,
                    "sampledValue": [
                        sample("1500"),
                        sample("7.4", measurand="Power.Active.Import", unit="kW"),
                        sample("230.1", measurand="Voltage", unit="V", phase="L1-N"),
                    ],
                }
            ],
        }
        assert await cp.result("MeterValues", meter) == {}
        stopped = await cp.result(
            "StopTransaction",
            {
                "transactionId": transaction_id,
                "idTag": "TAG1",
                "meterStop": 12_000,
                "timestamp": T2,
                "reason": "EVDisconnected",
                "transactionData": [
                    {"timestamp": T2, "sampledValue": [sample("12000", context="Transaction.End")]}
                ],
            },
        )
        assert stopped == {"idTagInfo": {"status": "Accepted", "parentIdTag": "GROUP"}}

    transaction = await app.services.transactions.get(transaction_id)
    assert transaction is not None
    assert transaction.state is TransactionState.COMPLETED
    assert (transaction.meter_start, transaction.meter_stop, transaction.energy_wh) == (
        1000,
        12_000,
        11_000,
    )
    assert transaction.started_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert transaction.stopped_at == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert transaction.stop_reason == "EVDisconnected"
    assert transaction.flags == ()
    values = [
        (s.measurand, s.raw_value, s.value, s.unit, s.phase, s.context) for s in transaction.samples
    ]
    assert values == [
        ("Energy.Active.Import.Register", "1500", Decimal("1500"), "Wh", None, "Sample.Periodic"),
        ("Power.Active.Import", "7.4", Decimal("7.4"), "kW", None, "Sample.Periodic"),
        ("Voltage", "230.1", Decimal("230.1"), "V", "L1-N", "Sample.Periodic"),
        ("Energy.Active.Import.Register", "12000", Decimal("12000"), "Wh", None, "Transaction.End"),
    ]
    point = await app.services.charge_points.get("CP1")
    assert point is not None
    assert (point.vendor, point.model, point.serial_number, point.firmware_version) == (
        "Acme",
        "Volt 22",
        "SN-1",
        "1.2.3",
    )
    assert (point.iccid, point.imsi, point.meter_type, point.meter_serial_number) == (
        "8931",
        "2620",
        "M-1",
        "MS-1",
    )
    assert point.last_boot_at is not None
    assert [(c.connector_id, c.status) for c in point.connectors] == [(1, "Preparing")]


async def test_boot_policy_reject_unknown_is_the_default(app: Application) -> None:
    async with client(app, "STRANGER") as cp:
        boot = await cp.boot()
        assert boot["status"] == "Rejected"
        assert boot["interval"] == app.settings.boot_retry_interval
        frame = await cp.call("Heartbeat", {})
        assert frame[:3] == [4, frame[1], "SecurityError"]
        frame = await cp.call(
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": T0},
        )
        assert frame[2] == "SecurityError"
    assert await app.services.charge_points.get("STRANGER") is None
    assert await app.services.transactions.list_transactions() == []


async def test_boot_policy_pending_unknown_then_operator_accepts(start_app: StartApp) -> None:
    app = await start_app(boot_policy="pending-unknown")
    async with client(app, "NEW1") as cp:
        boot = await cp.boot()
        assert boot["status"] == "Pending"
        point = await app.services.charge_points.get("NEW1")
        assert point is not None and point.registration is Registration.PENDING
        assert point.vendor == "Acme"
        assert (await cp.call("Heartbeat", {}))[2] == "SecurityError"
        await app.services.charge_points.update("NEW1", registration=Registration.ACCEPTED)
        assert (await cp.boot())["status"] == "Accepted"
        assert "currentTime" in await cp.result("Heartbeat", {})


async def test_boot_policy_accept_all_registers(start_app: StartApp) -> None:
    app = await start_app(boot_policy="accept-all")
    async with client(app, "LAB1") as cp:
        assert (await cp.boot())["status"] == "Accepted"
        assert "currentTime" in await cp.result("Heartbeat", {})

    async def disconnected() -> bool:
        point = await app.services.charge_points.get("LAB1")
        return point is not None and not point.connected

    await eventually(disconnected, "LAB1 recorded as disconnected")
    point = await app.services.charge_points.get("LAB1")
    assert point is not None and point.registration is Registration.ACCEPTED


async def test_known_charge_point_is_served_after_reconnect_without_boot(
    app: Application,
) -> None:
    """Charge points often reconnect without rebooting: they stay accepted."""
    await register(app)
    async with client(app) as cp:
        point = await app.services.charge_points.get("CP1")
        assert point is not None and point.connected and point.remote_address
        assert "currentTime" in await cp.result("Heartbeat", {})


async def test_connection_state_and_last_seen(start_app: StartApp) -> None:
    app = await start_app(seen_flush_interval=0.05)
    await register(app)
    async with client(app) as cp:
        await cp.result("Heartbeat", {})
        before = datetime.now(UTC) - timedelta(seconds=5)

        async def seen() -> bool:
            point = await app.services.charge_points.get("CP1")
            return (
                point is not None and point.last_seen_at is not None and point.last_seen_at > before
            )

        await eventually(seen, "last_seen_at written")

    async def gone() -> bool:
        point = await app.services.charge_points.get("CP1")
        return point is not None and not point.connected and point.connected_since is None

    await eventually(gone, "disconnected state written")


# ---------------------------------------------------------- statuses


async def test_status_notifications_current_and_history(app: Application) -> None:
    await register(app)
    async with client(app) as cp:
        for connector, status, error, stamp in [
            (0, "Available", "NoError", T0),
            (1, "Available", "NoError", T0),
            (1, "Faulted", "GroundFailure", T1),
            (2, "Unavailable", "NoError", T1),
        ]:
            payload: dict[str, Any] = {
                "connectorId": connector,
                "errorCode": error,
                "status": status,
                "timestamp": stamp,
            }
            if status == "Faulted":
                payload.update(info="RCD", vendorId="Acme", vendorErrorCode="E42")
            await cp.result("StatusNotification", payload)
    point = await app.services.charge_points.get("CP1")
    assert point is not None
    current = {
        c.connector_id: (c.status, c.error_code, c.info, c.vendor_error_code)
        for c in point.connectors
    }
    assert current == {
        0: ("Available", "NoError", None, None),
        1: ("Faulted", "GroundFailure", "RCD", "E42"),
        2: ("Unavailable", "NoError", None, None),
    }
    history = await app.services.store.read(
        lambda repos: repos.charge_points.list_status_history("CP1", connector_id=1)
    )
    assert [(h.status, h.timestamp) for h in history] == [
        ("Faulted", datetime(2026, 3, 1, 10, 15, tzinfo=UTC)),
        ("Available", datetime(2026, 3, 1, 10, tzinfo=UTC)),
    ]


# ------------------------------------------------------- authorization


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"status": "Accepted"}),
        ({"status": AuthorizationStatus.BLOCKED}, {"status": "Blocked"}),
        ({"status": AuthorizationStatus.INVALID}, {"status": "Invalid"}),
        (
            {"expiry_date": datetime(2020, 1, 1, tzinfo=UTC)},
            {"status": "Expired", "expiryDate": "2020-01-01T00:00:00.000Z"},
        ),
        (
            {"expiry_date": datetime(2099, 1, 1, tzinfo=UTC), "parent_id_tag": "FLEET"},
            {
                "status": "Accepted",
                "expiryDate": "2099-01-01T00:00:00.000Z",
                "parentIdTag": "FLEET",
            },
        ),
    ],
)
async def test_authorize_rules(
    app: Application, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    await register(app)
    await add_tag(app, "TAG1", **fields)
    async with client(app) as cp:
        assert await cp.result("Authorize", {"idTag": "TAG1"}) == {"idTagInfo": expected}
        assert await cp.result("Authorize", {"idTag": "NOBODY"}) == {
            "idTagInfo": {"status": "Invalid"}
        }


async def test_concurrent_transactions_limit(app: Application) -> None:
    await register(app)
    await add_tag(app, "ONE")  # max_concurrent_transactions = 1
    await add_tag(app, "TWO", max_concurrent_transactions=2)
    async with client(app) as cp:
        start = {"connectorId": 1, "idTag": "ONE", "meterStart": 0, "timestamp": T0}
        assert (await cp.result("StartTransaction", start))["idTagInfo"]["status"] == "Accepted"
        assert (await cp.result("Authorize", {"idTag": "ONE"}))["idTagInfo"][
            "status"
        ] == "ConcurrentTx"
        second = {"connectorId": 2, "idTag": "ONE", "meterStart": 0, "timestamp": T1}
        answer = await cp.result("StartTransaction", second)
        # Recorded all the same (the charge point will stop it), with the status answered.
        assert answer["idTagInfo"]["status"] == "ConcurrentTx"
        stored = await app.services.transactions.get(answer["transactionId"])
        assert stored is not None and stored.start_status is AuthorizationStatus.CONCURRENT_TX
        assert (await cp.result("Authorize", {"idTag": "TWO"}))["idTagInfo"]["status"] == "Accepted"


async def test_a_transaction_abandoned_by_a_new_start_no_longer_counts_against_its_tag(
    app: Application,
) -> None:
    await register(app)
    await add_tag(app, "ONE")  # max_concurrent_transactions = 1
    async with client(app) as cp:
        first = {"connectorId": 1, "idTag": "ONE", "meterStart": 0, "timestamp": T0}
        assert (await cp.result("StartTransaction", first))["idTagInfo"]["status"] == "Accepted"
        # Its StopTransaction never came: the next start on the connector abandons it,
        # and the tag's only transaction is then the new one.
        again = {"connectorId": 1, "idTag": "ONE", "meterStart": 10, "timestamp": T1}
        answer = await cp.result("StartTransaction", again)
        assert answer["idTagInfo"]["status"] == "Accepted"
        assert (await cp.result("Authorize", {"idTag": "ONE"}))["idTagInfo"][
            "status"
        ] == "ConcurrentTx"


# -------------------------------------------------------- transactions


async def test_start_transaction_recorded_even_when_tag_unknown(app: Application) -> None:
    await register(app)
    async with client(app) as cp:
        answer = await cp.result(
            "StartTransaction", {"connectorId": 1, "idTag": "WHO", "meterStart": 5, "timestamp": T0}
        )
    assert answer["idTagInfo"] == {"status": "Invalid"}
    stored = await app.services.transactions.get(answer["transactionId"])
    assert stored is not None and stored.state is TransactionState.ACTIVE
    assert stored.start_status is AuthorizationStatus.INVALID


async def test_retransmitted_start_and_stop_are_idempotent(app: Application) -> None:
    await register(app)
    await add_tag(app, "TAG1")
    async with client(app) as cp:
        start = {"connectorId": 1, "idTag": "TAG1", "meterStart": 100, "timestamp": T0}
        first = await cp.result("StartTransaction", start)
        again = await cp.result("StartTransaction", start)
        assert again == first
        stop = {"transactionId": first["transactionId"], "meterStop": 600, "timestamp": T2}
        assert await cp.result("StopTransaction", stop) == {}
        assert await cp.result("StopTransaction", stop) == {}
    transactions = await app.services.transactions.list_transactions()
    assert len(transactions) == 1
    assert transactions[0].energy_wh == 500
    assert transactions[0].flags == ()


async def test_transaction_ids_are_unique_and_increasing(app: Application) -> None:
    await register(app)
    await register(app, "CP2")
    ids = []
    async with client(app, "CP1") as one, client(app, "CP2") as two:
        for minute in range(3):
            for cp in (one, two):
                stamp = f"2026-03-01T10:{minute:02d}:00Z"
                answer = await cp.result(
                    "StartTransaction",
                    {"connectorId": 1, "idTag": "T", "meterStart": minute, "timestamp": stamp},
                )
                ids.append(answer["transactionId"])
    assert ids == sorted(ids) and len(set(ids)) == 6


async def test_open_transaction_on_same_connector_is_closed_as_abandoned(app: Application) -> None:
    await register(app)
    async with client(app) as cp:
        old = await cp.result(
            "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": T0}
        )
        new = await cp.result(
            "StartTransaction", {"connectorId": 1, "idTag": "B", "meterStart": 900, "timestamp": T1}
        )
        other = await cp.result(
            "StartTransaction", {"connectorId": 2, "idTag": "C", "meterStart": 0, "timestamp": T1}
        )
    zombie = await app.services.transactions.get(old["transactionId"])
    assert zombie is not None
    assert zombie.state is TransactionState.ABANDONED
    assert zombie.stopped_at == datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
    assert zombie.stop_reason and "superseded" in zombie.stop_reason
    assert "abandoned" in zombie.flags and zombie.energy_wh is None
    for answer in (new, other):
        live = await app.services.transactions.get(answer["transactionId"])
        assert live is not None and live.state is TransactionState.ACTIVE


async def test_late_stop_of_an_abandoned_transaction_completes_it(app: Application) -> None:
    await register(app)
    async with client(app) as cp:
        old = await cp.result(
            "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": T0}
        )
        await cp.result(
            "StartTransaction", {"connectorId": 1, "idTag": "B", "meterStart": 900, "timestamp": T1}
        )
        await cp.result(
            "StopTransaction",
            {
                "transactionId": old["transactionId"],
                "meterStop": 800,
                "timestamp": "2026-03-01T10:10:00Z",
            },
        )
    transaction = await app.services.transactions.get(old["transactionId"])
    assert transaction is not None
    assert transaction.state is TransactionState.COMPLETED
    assert transaction.energy_wh == 800 and "abandoned" in transaction.flags


async def test_stop_of_unknown_transaction_is_answered_and_kept(app: Application) -> None:
    await register(app)
    async with client(app) as cp:
        stop = {
            "transactionId": 4242,
            "meterStop": 10,
            "timestamp": T2,
            "idTag": "X",
            "reason": "PowerLoss",
        }
        assert await cp.result("StopTransaction", stop) == {"idTagInfo": {"status": "Invalid"}}
        assert await cp.result("StopTransaction", stop) == {"idTagInfo": {"status": "Invalid"}}
    kept = await app.services.transactions.list_unknown_stops()
    assert [(k.charge_point_id, k.transaction_id, k.meter_stop, k.reason) for k in kept] == [
        ("CP1", 4242, 10, "PowerLoss")
    ]


async def test_stop_for_another_charge_points_transaction_is_unknown(app: Application) -> None:
    await register(app)
    await register(app, "CP2")
    async with client(app, "CP1") as one:
        started = await one.result(
            "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": T0}
        )
    async with client(app, "CP2") as two:
        await two.result(
            "StopTransaction",
            {"transactionId": started["transactionId"], "meterStop": 5, "timestamp": T1},
        )
    transaction = await app.services.transactions.get(started["transactionId"])
    assert transaction is not None and transaction.state is TransactionState.ACTIVE
    assert [k.charge_point_id for k in await app.services.transactions.list_unknown_stops()] == [
        "CP2"
    ]


@pytest.mark.parametrize(
    ("meter_stop", "stop_time", "flag"),
    [
        (50, T2, "negative_energy"),
        (100 + 5_000_000, T2, "absurd_energy"),
        (100 + 900_000, "2026-03-01T10:00:30Z", "implausible_power"),
    ],
)
async def test_implausible_energy_is_flagged_not_stored(
    app: Application, meter_stop: int, stop_time: str, flag: str
) -> None:
    await register(app)
    async with client(app) as cp:
        started = await cp.result(
            "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 100, "timestamp": T0}
        )
        await cp.result(
            "StopTransaction",
            {
                "transactionId": started["transactionId"],
                "meterStop": meter_stop,
                "timestamp": stop_time,
            },
        )
    transaction = await app.services.transactions.get(started["transactionId"])
    assert transaction is not None
    assert transaction.energy_wh is None
    assert flag in transaction.flags
    assert transaction.meter_stop == meter_stop  # the raw reading is kept


async def test_id_tag_info_only_when_stop_carries_an_id_tag(app: Application) -> None:
    await register(app)
    async with client(app) as cp:
        started = await cp.result(
            "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": T0}
        )
        answer = await cp.result(
            "StopTransaction",
            {"transactionId": started["transactionId"], "meterStop": 1, "timestamp": T1},
        )
    assert answer == {}


# -------------------------------------------------------- meter values


async def test_meter_values_without_transaction_and_replayed(app: Application) -> None:
    await register(app)
    offline = [
        {"timestamp": f"2026-02-01T0{hour}:00:00Z", "sampledValue": [sample(str(hour * 100))]}
        for hour in range(3)
    ]
    async with client(app) as cp:
        payload = {"connectorId": 0, "meterValue": offline}
        assert await cp.result("MeterValues", payload) == {}
        assert await cp.result("MeterValues", payload) == {}  # retransmitted
        await cp.result(
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {"timestamp": T0, "sampledValue": [sample("not-a-number", format="SignedData")]}
                ],
            },
        )
    samples = await app.services.store.read(
        lambda repos: repos.meter_values.list_for_charge_point("CP1", limit=50)
    )
    by_time = sorted(samples, key=lambda s: s.timestamp)
    assert [(s.connector_id, s.timestamp.hour, s.raw_value) for s in by_time[:3]] == [
        (0, 0, "0"),
        (0, 1, "100"),
        (0, 2, "200"),
    ]
    assert len(samples) == 4
    signed = by_time[3]
    assert (signed.raw_value, signed.value, signed.format) == ("not-a-number", None, "SignedData")
    assert all(s.transaction_id is None for s in samples)


# -------------------------------------------------------- data transfer


async def test_data_transfer_vendor_registry(app: Application) -> None:
    await register(app)
    received: list[tuple[str, str | None, str | None]] = []

    async def acme(
        charge_point_id: str, message_id: str | None, data: str | None
    ) -> DataTransferResult:
        received.append((charge_point_id, message_id, data))
        return DataTransferResult("Accepted", data='{"echo": true}')

    app.services.data_transfer.register("com.acme", acme, message_id="Ping")
    async with client(app) as cp:
        answer = await cp.result(
            "DataTransfer", {"vendorId": "com.acme", "messageId": "Ping", "data": '{"n": 1}'}
        )
        assert answer == {"status": "Accepted", "data": '{"echo": true}'}
        assert await cp.result("DataTransfer", {"vendorId": "com.acme", "messageId": "Pong"}) == {
            "status": "UnknownMessageId"
        }
        assert await cp.result("DataTransfer", {"vendorId": "org.other"}) == {
            "status": "UnknownVendorId"
        }
    assert received == [("CP1", "Ping", '{"n": 1}')]
