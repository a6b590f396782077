"""A running Kilowatt app on each engine, and raw OCPP-J clients for exact frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from websockets.asyncio.client import connect

from kilowatt.app import Application
from tests.app_runner import StartApp, app_starter
from tests.raw_client import RawClient

TIMEOUT = 5.0


class Client(RawClient):
    """A raw OCPP-J charge point: sends CALLs, returns the exact answer frames."""

    BOOT: ClassVar[dict[str, Any]] = {
        "chargePointVendor": "Acme",
        "chargePointModel": "Volt 22",
        "chargePointSerialNumber": "SN-1",
        "firmwareVersion": "1.2.3",
        "iccid": "8931",
        "imsi": "2620",
        "meterType": "M-1",
        "meterSerialNumber": "MS-1",
    }


@pytest.fixture
async def start_app(engine_url: str) -> AsyncIterator[StartApp]:
    settings = {"database_url": engine_url, "shutdown_timeout": 2.0, "log_level": "warning"}
    async with app_starter(lambda _: settings) as start:
        yield start


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
