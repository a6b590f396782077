"""A running Kilowatt app on each engine, and raw OCPP-J clients for exact frames."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from kilowatt.app import Application, create_app
from kilowatt.config import load_settings

TIMEOUT = 5.0

StartApp = Callable[..., Awaitable[Application]]


class Client:
    """A raw OCPP-J charge point: sends CALLs, returns the exact answer frames."""

    def __init__(self, ws: ClientConnection, charge_point_id: str) -> None:
        self.ws = ws
        self.charge_point_id = charge_point_id
        self._ids = itertools.count(1)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        unique_id = f"m{next(self._ids)}"
        await self.ws.send(orjson.dumps([2, unique_id, action, payload]).decode())
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame: list[Any] = orjson.loads(await self.ws.recv())
                if frame[0] in (3, 4) and frame[1] == unique_id:
                    return frame

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The CALLRESULT payload; fails on a CALLERROR."""
        frame = await self.call(action, payload)
        assert frame[0] == 3, f"{action} answered {frame}"
        answer: dict[str, Any] = frame[2]
        return answer

    async def boot(self) -> dict[str, Any]:
        return await self.result(
            "BootNotification",
            {
                "chargePointVendor": "Acme",
                "chargePointModel": "Volt 22",
                "chargePointSerialNumber": "SN-1",
                "firmwareVersion": "1.2.3",
                "iccid": "8931",
                "imsi": "2620",
                "meterType": "M-1",
                "meterSerialNumber": "MS-1",
            },
        )


@pytest.fixture
async def start_app(engine_url: str) -> AsyncIterator[StartApp]:
    apps: list[Application] = []

    async def start(**overrides: Any) -> Application:
        values: dict[str, Any] = {
            "port": 0,
            "strict_outgoing": True,
            "ping_interval": 0,
            "database_url": engine_url,
            "shutdown_timeout": 2.0,
            "log_level": "warning",
        }
        values.update(overrides)
        app = create_app(load_settings(**values))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in reversed(apps):
        async with asyncio.timeout(10):
            await app.stop()


@pytest.fixture
async def app(start_app: StartApp) -> Application:
    return await start_app()


@contextlib.asynccontextmanager
async def client(app: Application, charge_point_id: str = "CP1") -> AsyncIterator[Client]:
    url = f"ws://127.0.0.1:{app.gateway.port}{app.settings.ocpp_path}{charge_point_id}"
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(url, subprotocols=["ocpp1.6"], ping_interval=None)  # type: ignore[list-item]
    try:
        async with asyncio.timeout(TIMEOUT):
            while app.registry.get(charge_point_id) is None:
                await asyncio.sleep(0.005)
        yield Client(ws, charge_point_id)
    finally:
        await ws.close()
        async with asyncio.timeout(TIMEOUT):
            while app.registry.get(charge_point_id) is not None:
                await asyncio.sleep(0.005)
