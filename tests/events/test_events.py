"""Events: the in-process bus, what the services publish, and the SSE stream."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kilowatt.app import Application
from kilowatt.bus.events import Event, LocalEventBus
from kilowatt.services.events import EventService
from tests.events.conftest import (
    TIMEOUT,
    SseReader,
    StartApp,
    admin_token,
    api_client,
    charge_point,
    read_token,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T0 = "2026-01-01T10:00:00.000Z"
T1 = "2026-01-01T11:00:00.000Z"


def _event(type: str = "status", charge_point_id: str | None = "CP1", **data: Any) -> Event:
    return Event(type, NOW, charge_point_id, data)


def _bus(app: Application) -> LocalEventBus:
    events = app.services.events
    assert events is not None and isinstance(events.bus, LocalEventBus)
    return events.bus


# ------------------------------------------------------------------- the bus


async def test_subscribers_get_every_event_in_order_with_increasing_ids() -> None:
    bus = LocalEventBus()
    first, second = bus.subscribe(), bus.subscribe()
    published = [bus.publish(_event(n=n)) for n in range(5)]
    assert [event.id for event in published] == [1, 2, 3, 4, 5]
    for subscription in (first, second):
        assert [(await subscription.next()) for _ in range(5)] == published
    await bus.close()


async def test_filters_by_charge_point_and_type() -> None:
    bus = LocalEventBus()
    only_cp2 = bus.subscribe(charge_point_id="CP2")
    boots = bus.subscribe(types={"boot", "connection"})
    bus.publish(_event("status", "CP1"))
    bus.publish(_event("boot", "CP2"))
    bus.publish(_event("status", "CP2"))
    bus.publish(_event("connection", "CP1"))
    await bus.close()
    assert [(e.type, e.charge_point_id) async for e in only_cp2] == [
        ("boot", "CP2"),
        ("status", "CP2"),
    ]
    assert [(e.type, e.charge_point_id) async for e in boots] == [
        ("boot", "CP2"),
        ("connection", "CP1"),
    ]


async def test_a_slow_subscriber_loses_its_oldest_events_and_never_blocks() -> None:
    bus = LocalEventBus(queue_size=10)
    slow = bus.subscribe()
    fast = bus.subscribe(queue_size=1000)
    started = time.perf_counter()
    for n in range(500):
        bus.publish(_event(n=n))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5  # nothing waited for the slow reader
    assert slow.dropped == 490
    assert fast.dropped == 0
    kept = [(await slow.next()).data["n"] for _ in range(10)]  # type: ignore[union-attr]
    assert kept == list(range(490, 500))
    await bus.close()


async def test_next_times_out_and_close_ends_the_iteration() -> None:
    bus = LocalEventBus()
    subscription = bus.subscribe()
    assert await subscription.next(timeout=0.01) is None
    waiting = asyncio.ensure_future(subscription.next())
    await asyncio.sleep(0)
    bus.publish(_event())
    assert (await waiting) is not None
    reader = asyncio.ensure_future(subscription.next())
    await asyncio.sleep(0)
    await bus.close()
    with pytest.raises(StopAsyncIteration):
        await reader
    late = bus.subscribe()
    with pytest.raises(StopAsyncIteration):
        await late.next()
    assert bus.publish(_event()).id == 2  # still stamped, delivered to nobody


async def test_a_closed_subscription_is_removed() -> None:
    bus = LocalEventBus()
    async with bus.subscribe() as subscription:
        assert bus.subscribers == 1
        bus.publish(_event())
    assert bus.subscribers == 0
    assert (await subscription.next()) is not None  # what was queued is still readable
    with pytest.raises(StopAsyncIteration):
        await subscription.next()


async def test_a_failing_sink_does_not_fail_the_publisher(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def publish(self, event: Event) -> None:
            raise RuntimeError("boom")

    class Keeping:
        def __init__(self) -> None:
            self.events: list[Event] = []

        def publish(self, event: Event) -> None:
            self.events.append(event)

    keeping = Keeping()
    bus = LocalEventBus()
    service = EventService(bus, _FixedClock(), [Broken(), keeping])
    with caplog.at_level("ERROR", logger="kilowatt.events"):
        event = service.publish("status", "CP1", {"x": 1})
    assert keeping.events == [event]
    assert event.id == 1
    assert "event sink failed" in caplog.text
    await bus.close()


async def test_nothing_is_built_while_nobody_listens() -> None:
    class Keeping:
        def __init__(self) -> None:
            self.events: list[Event] = []

        def publish(self, event: Event) -> None:
            self.events.append(event)

    def report(service: EventService) -> None:
        service.status(
            "CP1",
            connector_id=1,
            status="Charging",
            error_code="NoError",
            info=None,
            vendor_id=None,
            vendor_error_code=None,
            timestamp=None,
            time=NOW,
        )
        service.meter_values("CP1", connector_id=1, transaction_id=7, samples=[], time=NOW)

    bus = LocalEventBus()
    service = EventService(bus, _FixedClock())
    assert not service.listened
    report(service)
    assert bus.published == 0  # no subscriber, no sink: skipped before it was built

    async with bus.subscribe() as subscription:
        assert service.listened
        report(service)
        received = [await subscription.next(timeout=1), await subscription.next(timeout=1)]
        assert [event.type for event in received] == ["status", "meter_values"]
    assert not service.listened  # the subscriber went
    report(service)
    assert bus.published == 2

    keeping = Keeping()
    with_sink = EventService(bus, _FixedClock(), [keeping])
    assert with_sink.listened
    report(with_sink)
    assert [event.type for event in keeping.events] == ["status", "meter_values"]
    await bus.close()


class _FixedClock:
    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0


# ------------------------------------------------------ what the app publishes


async def test_the_app_publishes_the_life_of_a_charge_point(start_app: StartApp) -> None:
    app = await start_app()
    subscription = _bus(app).subscribe()
    async with charge_point(app) as cp:
        await cp.boot()
        await cp.result(
            "StatusNotification", {"connectorId": 1, "status": "Preparing", "errorCode": "NoError"}
        )
        started = await cp.result(
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": T0},
        )
        transaction_id = started["transactionId"]
        await cp.result(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": transaction_id,
                "meterValue": [
                    {
                        "timestamp": T0,
                        "sampledValue": [{"value": "1.5", "unit": "kWh"}],
                    },
                    {
                        "timestamp": T1,
                        "sampledValue": [
                            {"value": "2.5", "unit": "kWh"},
                            {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"},
                        ],
                    },
                ],
            },
        )
        await cp.result(
            "StopTransaction",
            {
                "transactionId": transaction_id,
                "meterStop": 3500,
                "timestamp": T1,
                "reason": "EVDisconnected",
            },
        )
        await cp.result(
            "SecurityEventNotification",
            {"type": "InvalidCentralSystemCertificate", "timestamp": T1, "techInfo": "expired"},
        )
        # A retransmitted StartTransaction publishes nothing new.
        await cp.result(
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": T0},
        )
    events: list[Event] = []
    async with asyncio.timeout(TIMEOUT):
        while not events or events[-1].data.get("state") != "disconnected":
            event = await subscription.next()
            assert event is not None
            events.append(event)
    subscription.close()

    assert [event.type for event in events] == [
        "connection",
        "boot",
        "status",
        "transaction.started",
        "meter_values",
        "transaction.stopped",
        "security_event",
        "connection",
    ]
    assert all(event.charge_point_id == "CP1" for event in events)
    ids = [event.id for event in events]
    assert ids == sorted(ids)
    connected, boot, status, start, meter, stop, security, disconnected = (e.data for e in events)
    assert connected["state"] == "connected"
    assert connected["remote_address"].startswith("127.0.0.1:")
    assert connected["security_profile"] == 0
    assert (boot["registration"], boot["vendor"], boot["model"]) == ("Accepted", "Acme", "Volt 22")
    assert (status["connector_id"], status["status"], status["error_code"]) == (
        1,
        "Preparing",
        "NoError",
    )
    assert start["transaction_id"] == transaction_id
    assert (start["connector_id"], start["id_tag"], start["meter_start"]) == (1, "TAG1", 1000)
    assert start["timestamp"] == T0
    assert start["id_tag_status"] == "Invalid"  # unknown tag: recorded all the same
    assert meter == {
        "connector_id": 1,
        "transaction_id": transaction_id,
        "count": 3,
        "energy_wh": 2500,
        "energy_timestamp": T1,
    }
    assert stop["transaction_id"] == transaction_id
    assert (stop["energy_wh"], stop["reason"], stop["state"], stop["known"]) == (
        2500,
        "EVDisconnected",
        "completed",
        True,
    )
    assert (stop["meter_start"], stop["meter_stop"], stop["timestamp"]) == (1000, 3500, T1)
    assert security == {
        "event_type": "InvalidCentralSystemCertificate",
        "timestamp": T1,
        "tech_info": "expired",
    }
    assert disconnected["state"] == "disconnected"
    assert disconnected["remote_address"] == connected["remote_address"]


async def test_unknown_and_superseded_transactions_are_published(start_app: StartApp) -> None:
    app = await start_app()
    subscription = _bus(app).subscribe(types={"transaction.started", "transaction.stopped"})
    async with charge_point(app) as cp:
        await cp.boot()
        first = await cp.result(
            "StartTransaction",
            {"connectorId": 2, "idTag": "TAG1", "meterStart": 0, "timestamp": T0},
        )
        # Its StopTransaction was lost: the next start on the connector supersedes it.
        second = await cp.result(
            "StartTransaction",
            {"connectorId": 2, "idTag": "TAG2", "meterStart": 500, "timestamp": T1},
        )
        await cp.result(
            "StopTransaction", {"transactionId": 999999, "meterStop": 10, "timestamp": T1}
        )
        # A retransmission of the unknown stop is kept once and published once.
        await cp.result(
            "StopTransaction", {"transactionId": 999999, "meterStop": 10, "timestamp": T1}
        )
    events = [await subscription.next(timeout=TIMEOUT) for _ in range(4)]
    assert await subscription.next(timeout=0.1) is None
    subscription.close()
    summary = [
        (e.type, e.data["transaction_id"], e.data.get("state")) for e in events if e is not None
    ]
    assert summary == [
        ("transaction.started", first["transactionId"], None),
        ("transaction.stopped", first["transactionId"], "abandoned"),
        ("transaction.started", second["transactionId"], None),
        ("transaction.stopped", 999999, None),
    ]
    assert events[3] is not None and events[3].data["known"] is False


async def test_a_subscriber_that_never_reads_does_not_slow_charge_points(
    start_app: StartApp,
) -> None:
    app = await start_app()
    stuck = _bus(app).subscribe(queue_size=5)
    async with charge_point(app) as cp:
        await cp.boot()
        started = time.perf_counter()
        for n in range(50):
            await cp.result(
                "StatusNotification",
                {
                    "connectorId": 1,
                    "status": "Available" if n % 2 else "Charging",
                    "errorCode": "NoError",
                },
            )
        elapsed = time.perf_counter() - started
    assert elapsed < TIMEOUT
    assert stuck.dropped > 40
    stuck.close()


# ------------------------------------------------------------ the SSE stream


async def test_sse_streams_events_in_order(start_app: StartApp) -> None:
    app = await start_app()
    headers = await read_token(app)
    async with (
        api_client(app) as http,
        http.stream("GET", "/api/v1/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        sse = SseReader(response)
        await sse.comment("subscribed")
        async with charge_point(app) as cp:
            await cp.boot()
            await cp.result(
                "StatusNotification",
                {"connectorId": 0, "status": "Available", "errorCode": "NoError"},
            )
            started = await cp.result(
                "StartTransaction",
                {"connectorId": 1, "idTag": "TAG1", "meterStart": 100, "timestamp": T0},
            )
            await cp.result(
                "StopTransaction",
                {
                    "transactionId": started["transactionId"],
                    "meterStop": 1100,
                    "timestamp": T1,
                    "reason": "Local",
                },
            )
        received = [await sse.event() for _ in range(6)]

    assert [e["event"] for e in received] == [
        "connection",
        "boot",
        "status",
        "transaction.started",
        "transaction.stopped",
        "connection",
    ]
    ids = [e["id"] for e in received]
    assert ids == sorted(ids) and len(set(ids)) == 6
    for event in received:
        body = event["data"]
        assert set(body) == {"id", "type", "time", "charge_point_id", "data"}
        assert (body["id"], body["type"], body["charge_point_id"]) == (
            event["id"],
            event["event"],
            "CP1",
        )
        assert body["time"].endswith("Z")
    data = [e["data"]["data"] for e in received]
    assert data[0]["state"] == "connected"
    assert data[1]["registration"] == "Accepted"
    assert (data[2]["connector_id"], data[2]["status"]) == (0, "Available")
    assert data[3]["transaction_id"] == started["transactionId"]
    assert (data[4]["energy_wh"], data[4]["reason"]) == (1000, "Local")
    assert data[5]["state"] == "disconnected"
    async with asyncio.timeout(TIMEOUT):
        while _bus(app).subscribers:  # the client left: its subscription went with it
            await asyncio.sleep(0.01)


async def test_sse_filters_by_charge_point_and_types(start_app: StartApp) -> None:
    app = await start_app()
    headers = await admin_token(app)
    params = {"charge_point_id": "CP2", "types": "boot, status"}
    async with (
        api_client(app) as http,
        http.stream("GET", "/api/v1/events", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200
        sse = SseReader(response)
        await sse.comment("subscribed")
        async with charge_point(app, "CP1") as one, charge_point(app, "CP2") as two:
            for client in (one, two):
                await client.boot()
                await client.result(
                    "StatusNotification",
                    {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
                )
        received = [await sse.event() for _ in range(2)]
    assert [(e["event"], e["data"]["charge_point_id"]) for e in received] == [
        ("boot", "CP2"),
        ("status", "CP2"),
    ]


async def test_sse_rejects_unknown_types_and_missing_tokens(start_app: StartApp) -> None:
    app = await start_app()
    headers = await read_token(app)
    async with api_client(app) as http:
        unknown = await http.get("/api/v1/events", params={"types": "boot,nope"}, headers=headers)
        assert unknown.status_code == 422
        assert unknown.json()["error"]["code"] == "validation_error"
        assert "nope" in unknown.json()["error"]["message"]
        empty = await http.get("/api/v1/events", params={"types": " , "}, headers=headers)
        assert empty.status_code == 422
        assert (await http.get("/api/v1/events")).status_code == 401


async def test_sse_sends_keep_alive_comments(start_app: StartApp) -> None:
    app = await start_app(events_keepalive_interval=0.05)
    headers = await read_token(app)
    async with (
        api_client(app) as http,
        http.stream("GET", "/api/v1/events", headers=headers) as response,
    ):
        sse = SseReader(response)
        await sse.comment("subscribed")
        await sse.comment("keep-alive", timeout=1.0)
        await sse.comment("keep-alive", timeout=1.0)


async def test_sse_says_when_it_fell_behind(start_app: StartApp) -> None:
    app = await start_app(events_queue_size=3)
    headers = await read_token(app)
    async with (
        api_client(app) as http,
        http.stream("GET", "/api/v1/events", headers=headers) as response,
    ):
        sse = SseReader(response)
        await sse.comment("subscribed")
        events = app.services.events
        assert events is not None
        for n in range(10):  # all at once: the stream's generator has no turn in between
            events.publish("status", "CP1", {"n": n})
        received = [await sse.event() for _ in range(3)]
    assert [e["data"]["data"]["n"] for e in received] == [7, 8, 9]
    assert any("7 events dropped" in comment for comment in sse.comments)


async def test_stopping_the_app_ends_open_streams(start_app: StartApp) -> None:
    app = await start_app()
    headers = await read_token(app)
    async with (
        api_client(app) as http,
        http.stream("GET", "/api/v1/events", headers=headers) as response,
    ):
        sse = SseReader(response)
        await sse.comment("subscribed")
        started = time.perf_counter()
        async with asyncio.timeout(TIMEOUT):
            await app.stop()
        assert time.perf_counter() - started < 2.0  # not the API's 5 s shutdown wait
        with pytest.raises((StopAsyncIteration, httpx.HTTPError)):
            await sse.event(timeout=2.0)
