"""Nothing acknowledged is lost: SIGKILL the server under load, restart, compare.

Charge points run transactions as fast as the server answers; every CALLRESULT for
StartTransaction, MeterValues and StopTransaction is noted as it arrives. The server
process is then killed with SIGKILL in the middle of that load and started again on
the same database: everything acknowledged must be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from kilowatt.store.sql.database import open_store

pytestmark = pytest.mark.slow

CHARGE_POINTS = 8
BASE = datetime(2026, 5, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(database_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "KILOWATT_DATABASE_URL": database_url,
        "KILOWATT_BOOT_POLICY": "accept-all",
        "KILOWATT_LOG_LEVEL": "warning",
        "KILOWATT_PING_INTERVAL": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kilowatt", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"kilowatt serve exited: {process.stderr.read().decode()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("kilowatt serve did not start listening within 30 s")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


@dataclass
class Acknowledged:
    starts: dict[int, tuple[str, int, int]] = field(
        default_factory=dict
    )  # id → cp, meter, connector
    stops: dict[int, int] = field(default_factory=dict)  # id → meterStop
    samples: set[tuple[str, int, str]] = field(default_factory=set)  # cp, transaction, value


async def drive(url: str, charge_point_id: str, acked: Acknowledged, stop: asyncio.Event) -> None:
    ids = itertools.count()
    clock = itertools.count()

    async def call(ws: Any, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = str(next(ids))
        await ws.send(orjson.dumps([2, unique_id, action, payload]).decode())
        while True:
            frame = orjson.loads(await ws.recv())
            if frame[1] == unique_id:
                assert frame[0] == 3, frame
                answer: dict[str, Any] = frame[2]
                return answer

    def stamp() -> str:
        return (BASE + timedelta(seconds=next(clock))).isoformat().replace("+00:00", "Z")

    with contextlib.suppress(ConnectionClosed, OSError, InvalidHandshake):
        async with connect(url + charge_point_id, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            await call(ws, "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
            meter = 0
            while not stop.is_set():
                started = await call(
                    ws,
                    "StartTransaction",
                    {"connectorId": 1, "idTag": "T", "meterStart": meter, "timestamp": stamp()},
                )
                transaction_id = started["transactionId"]
                acked.starts[transaction_id] = (charge_point_id, meter, 1)
                for _ in range(3):
                    meter += 10
                    value = str(meter)
                    await call(
                        ws,
                        "MeterValues",
                        {
                            "connectorId": 1,
                            "transactionId": transaction_id,
                            "meterValue": [
                                {"timestamp": stamp(), "sampledValue": [{"value": value}]}
                            ],
                        },
                    )
                    acked.samples.add((charge_point_id, transaction_id, value))
                await call(
                    ws,
                    "StopTransaction",
                    {"transactionId": transaction_id, "meterStop": meter, "timestamp": stamp()},
                )
                acked.stops[transaction_id] = meter


@contextlib.asynccontextmanager
async def load(url: str, acked: Acknowledged) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(drive(url, f"DUR{i:02d}", acked, stop)) for i in range(CHARGE_POINTS)
    ]
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await asyncio.gather(*tasks, return_exceptions=True)


async def stored(database_url: str) -> Acknowledged:
    store = open_store(database_url)
    try:

        def read(repos: Any) -> Acknowledged:
            found = Acknowledged()
            for transaction in repos.transactions.list_transactions(limit=1_000_000):
                found.starts[transaction.id] = (
                    transaction.charge_point_id,
                    transaction.meter_start,
                    transaction.connector_id,
                )
                if transaction.meter_stop is not None:
                    found.stops[transaction.id] = transaction.meter_stop
                for sample in repos.meter_values.list_for_transaction(transaction.id):
                    found.samples.add((sample.charge_point_id, transaction.id, sample.raw_value))
            return found

        result: Acknowledged = await store.read(read)
        return result
    finally:
        await store.close()


async def kill_under_load_and_check(database_url: str) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ocpp/"
    acked = Acknowledged()
    with server(database_url, port) as process:
        async with load(url, acked):
            await asyncio.sleep(2.0)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
    assert len(acked.starts) > 20, "the load did not get going; nothing was tested"
    assert acked.stops and acked.samples
    # Restart on the same database: it must start (recovering the WAL) and serve.
    with server(database_url, free_port()):
        found = await stored(database_url)
    missing_starts = {k: v for k, v in acked.starts.items() if found.starts.get(k) != v}
    missing_stops = {k: v for k, v in acked.stops.items() if found.stops.get(k) != v}
    missing_samples = acked.samples - found.samples
    assert not missing_starts, f"acknowledged starts lost: {missing_starts}"
    assert not missing_stops, f"acknowledged stops lost: {missing_stops}"
    assert not missing_samples, f"acknowledged meter values lost: {sorted(missing_samples)[:10]}"


async def test_sigkill_loses_nothing_acknowledged_sqlite(tmp_path: Any) -> None:
    await kill_under_load_and_check(f"sqlite:///{tmp_path}/kilowatt.db")


async def test_sigkill_loses_nothing_acknowledged_postgresql(engine_pg: str) -> None:
    await kill_under_load_and_check(engine_pg)


@pytest.fixture
async def engine_pg(postgres_url: str) -> str:
    from tests.conftest import _migrate_once, truncate_postgres

    await _migrate_once(postgres_url)
    await truncate_postgres(postgres_url)
    return postgres_url
