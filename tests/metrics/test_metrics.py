"""``GET /metrics`` of a real Kilowatt, scraped over a socket, before and after traffic."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from kilowatt.app import Application, create_app
from kilowatt.config import ConfigError, load_settings
from kilowatt.metrics import Metrics
from kilowatt.protocol.errors import CallErrorReceived, CallTimeout
from kilowatt.services.api_tokens import Role
from kilowatt.simulator import Scenario, SimulationConfig, run_simulation

TIMEOUT = 10.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def kilowatt(tmp_path: Path) -> AsyncIterator[Application]:
    app = create_app(
        load_settings(
            port=0,
            database_url=f"sqlite:///{tmp_path}/k.db",
            boot_policy="accept-all",
            ping_interval=0,
            log_level="warning",
            shutdown_timeout=1.0,
        )
    )
    await app.start()
    assert app.metrics is not None
    app.metrics.active_transactions_max_age = 0  # count at every scrape
    try:
        yield app
    finally:
        async with asyncio.timeout(TIMEOUT):
            await app.stop()


async def scrape(app: Application) -> Samples:
    """Every sample of ``GET /metrics``, by name and labels (over a real socket)."""
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as client:
        response = await client.get(f"http://127.0.0.1:{app.gateway.port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def messages(samples: Samples, action: str, direction: str, kind: str) -> float:
    return value(
        samples, "kilowatt_ocpp_messages_total", action=action, direction=direction, type=kind
    )


class RawChargePoint:
    """Exact frames over websockets; the Central System's CALLs are answered NotSupported
    unless ``silent``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.silent = False
        self.calls: list[list[Any]] = []
        self.answers: dict[str, list[Any]] = {}
        self.arrived = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for text in self.ws:
            frame = json.loads(text)
            if frame[0] == 2:
                self.calls.append(frame)
                if not self.silent:
                    await self.ws.send(json.dumps([4, frame[1], "NotSupported", "no", {}]))
            else:
                self.answers[frame[1]] = frame
            self.arrived.set()

    async def send(self, unique_id: str, action: str, payload: dict[str, Any]) -> list[Any]:
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        async with asyncio.timeout(TIMEOUT):
            while unique_id not in self.answers:
                self.arrived.clear()
                await self.arrived.wait()
        return self.answers[unique_id]

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


async def raw_charge_point(app: Application, charge_point_id: str) -> RawChargePoint:
    ws = await connect(
        f"ws://127.0.0.1:{app.gateway.port}/ocpp/{charge_point_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        ping_interval=None,
        proxy=None,
    )
    cp = RawChargePoint(ws)
    boot = await cp.send(
        "b", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "Raw"}
    )
    assert boot[2]["status"] == "Accepted"
    # The Central System may ask for the configuration right after the boot: let that
    # call come and be answered before the test counts outgoing calls.
    try:
        async with asyncio.timeout(1.0):
            while not cp.calls:
                cp.arrived.clear()
                await cp.arrived.wait()
    except TimeoutError:
        pass
    connection = app.registry.get(charge_point_id)
    assert connection is not None
    async with asyncio.timeout(TIMEOUT):
        while connection.session.in_flight is not None or connection.session.queued:
            await asyncio.sleep(0.01)
    return cp


async def test_metrics_appear_and_change_after_real_traffic(kilowatt: Application) -> None:
    before = await scrape(kilowatt)
    assert value(before, "kilowatt_connected_charge_points") == 0
    assert value(before, "kilowatt_active_transactions") == 0
    assert not any(name == "kilowatt_ocpp_messages_total" for name, _ in before)
    assert ("process_cpu_seconds_total", frozenset()) in before

    cp = await raw_charge_point(kilowatt, "RAW1")
    now = "2026-03-01T09:00:00Z"
    for n in range(2):
        assert (await cp.send(f"h{n}", "Heartbeat", {}))[0] == 3
    assert (await cp.send("s", "StatusNotification", {"connectorId": 1}))[2] == "ProtocolError"
    assert (await cp.send("f", "FlyToTheMoon", {}))[2] == "NotImplemented"
    start = await cp.send(
        "t",
        "StartTransaction",
        {"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now},
    )
    transaction_id = start[2]["transactionId"]

    after = await scrape(kilowatt)
    assert value(after, "kilowatt_connected_charge_points") == 1
    assert value(after, "kilowatt_active_transactions") == 1
    assert messages(after, "BootNotification", "in", "CALL") == 1
    assert messages(after, "BootNotification", "out", "CALLRESULT") == 1
    assert messages(after, "Heartbeat", "in", "CALL") == 2
    assert messages(after, "Heartbeat", "out", "CALLRESULT") == 2
    assert messages(after, "StatusNotification", "out", "CALLERROR") == 1
    assert messages(after, "other", "in", "CALL") == 1
    errors = "kilowatt_ocpp_call_errors_total"
    assert (
        value(after, errors, direction="out", action="StatusNotification", code="ProtocolError")
        == 1
    )
    assert value(after, errors, direction="out", action="other", code="NotImplemented") == 1
    assert value(after, "kilowatt_ocpp_handler_seconds_count", action="Heartbeat") == 2
    assert value(after, "kilowatt_ocpp_handler_seconds_bucket", action="Heartbeat", le="+Inf") == 2
    assert value(after, "kilowatt_ocpp_handler_seconds_sum", action="Heartbeat") > 0
    # The boot, the transaction: units of work, committed in groups.
    units = value(after, "kilowatt_db_unit_of_work_seconds_count")
    assert units >= 2
    assert value(after, "kilowatt_db_group_commit_units_sum") == units
    assert 1 <= value(after, "kilowatt_db_group_commit_units_count") <= units
    # SQLite, synchronous=FULL: every group was answered after an fsync of the WAL.
    assert value(after, "kilowatt_db_fsync_seconds_count") >= 1
    assert value(after, "kilowatt_db_fsync_seconds_sum") > 0
    assert value(after, "kilowatt_db_pending_writes") == 0
    for call in cp.calls:  # e.g. GetConfiguration after the boot, answered NotSupported
        assert messages(after, call[2], "out", "CALL") >= 1
        assert value(after, errors, direction="in", action=call[2], code="NotSupported") >= 1

    # Calls to the charge point: one on the wire, one queued behind it; both time out.
    connection = kilowatt.registry.get("RAW1")
    assert connection is not None
    cp.silent = True
    calls = [
        asyncio.create_task(kilowatt.commands.call("RAW1", "ClearCache", {}, timeout=0.5))
        for _ in range(2)
    ]
    async with asyncio.timeout(TIMEOUT):
        while connection.session.queued != 1:
            await asyncio.sleep(0.01)
    waiting = await scrape(kilowatt)
    assert value(waiting, "kilowatt_outgoing_calls_in_flight") == 1
    assert value(waiting, "kilowatt_outgoing_calls_queued") == 1
    for task in calls:
        with pytest.raises(CallTimeout):
            await task
    cp.silent = False
    with pytest.raises(CallErrorReceived):
        await kilowatt.commands.call("RAW1", "ClearCache", {}, timeout=5)

    stop = {"transactionId": transaction_id, "meterStop": 10, "timestamp": now}
    assert (await cp.send("p", "StopTransaction", stop))[0] == 3
    later = await scrape(kilowatt)
    assert value(later, "kilowatt_ocpp_command_timeouts_total", action="ClearCache") == 2
    assert messages(later, "ClearCache", "out", "CALL") == 3
    assert messages(later, "ClearCache", "in", "CALLERROR") == 1
    assert value(later, errors, direction="in", action="ClearCache", code="NotSupported") == 1
    assert value(later, "kilowatt_ocpp_command_seconds_count", action="ClearCache") == 1
    assert value(later, "kilowatt_outgoing_calls_queued") == 0
    assert value(later, "kilowatt_active_transactions") == 0
    assert value(later, "kilowatt_db_unit_of_work_seconds_count") > units

    await cp.close()
    async with asyncio.timeout(TIMEOUT):
        while kilowatt.registry.get("RAW1") is not None:
            await asyncio.sleep(0.01)
    gone = await scrape(kilowatt)
    assert value(gone, "kilowatt_connected_charge_points") == 0


async def test_metrics_count_what_the_simulator_sent(kilowatt: Application) -> None:
    from kilowatt.domain.models import IdTag

    await kilowatt.services.authorization.import_id_tags(
        IdTag(f"SIM{i:05d}C{c}") for i in (1, 2, 3) for c in (1, 2)
    )
    result = await run_simulation(
        SimulationConfig(
            url=f"ws://127.0.0.1:{kilowatt.gateway.port}/ocpp/",
            charge_points=3,
            scenario=Scenario(
                idle_seconds=(0.1, 0.3), session_seconds=(0.5, 1.0), meter_interval=1
            ),
            duration=3.0,
            seed=5,
        )
    )
    assert result.errors == 0, result.first_errors
    samples = await scrape(kilowatt)
    for action, count in result.calls_sent.items():
        assert messages(samples, action, "in", "CALL") == count, action
        assert messages(samples, action, "out", "CALLRESULT") == count, action
    for action, count in result.calls_answered.items():
        assert messages(samples, action, "in", "CALLRESULT") == count, action
    assert value(samples, "kilowatt_active_transactions") == 0


async def test_metrics_need_no_token(kilowatt: Application) -> None:
    _, secret = await kilowatt.services.tokens.create("t", Role.ADMIN)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{kilowatt.gateway.port}", trust_env=False, timeout=TIMEOUT
    ) as client:
        assert (await client.get("/api/v1/charge-points")).status_code == 401
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert "kilowatt_connected_charge_points 0.0" in response.text
        authorized = await client.get(
            "/api/v1/charge-points", headers={"Authorization": f"Bearer {secret}"}
        )
        assert authorized.status_code == 200


async def test_each_application_has_its_own_registry(tmp_path: Path) -> None:
    apps = [
        create_app(load_settings(port=0, database_url=f"sqlite:///{tmp_path}/{n}.db"))
        for n in range(2)
    ]
    first, second = (app.metrics for app in apps)
    assert first is not None and second is not None
    assert first.registry is not second.registry
    first.call_refused("CP", "Heartbeat", "GenericError")
    assert b'action="Heartbeat"' in first.render()
    assert b'action="Heartbeat"' not in second.render()
    for app in apps:
        await app.services.store.close()


# ------------------------------------------------------------------- tracing


def test_tracing_without_opentelemetry_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # "not installed"
    with pytest.raises(ConfigError, match="OpenTelemetry is not installed"):
        load_settings(tracing=True)
    assert load_settings(tracing=False).tracing is False


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def test_message_log_losses_and_restarts_are_counted() -> None:
    class InProcess:
        dropped = 3
        restarts = None

    class Shipped:
        dropped = 5
        restarts = 2

    inline = Metrics(process_metrics=False)
    inline.attach_message_log(InProcess())
    samples = parse(inline.render().decode())
    assert value(samples, "kilowatt_message_log_frames_dropped_total") == 3
    assert ("kilowatt_message_log_process_restarts_total", frozenset()) not in samples

    shipped = Metrics(process_metrics=False)
    shipped.attach_message_log(Shipped())
    samples = parse(shipped.render().decode())
    assert value(samples, "kilowatt_message_log_frames_dropped_total") == 5
    assert value(samples, "kilowatt_message_log_process_restarts_total") == 2
