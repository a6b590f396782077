"""A running Kilowatt, an HTTP client with an admin token, and a connected charge point.

The REST API and the OCPP WebSocket endpoint share one port; everything runs over
real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection, connect

from kilowatt.app import Application, create_app
from kilowatt.config import load_settings
from kilowatt.services.api_tokens import Role
from tests.api_remote.charge_point import ChargePoint, Wire

# Upper bound of every single wait in this package.
TIMEOUT = 5.0
CALL_TIMEOUT = 2.0
CHARGE_POINT_ID = "CP1"

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    async with asyncio.timeout(timeout):
        return await awaitable


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out after {TIMEOUT} s waiting for: {what}")


def ws_url(app: Application, charge_point_id: str) -> str:
    return f"ws://127.0.0.1:{app.gateway.port}{app.settings.ocpp_path}{charge_point_id}"


@pytest.fixture
async def kilowatt(tmp_path: Path) -> AsyncIterator[Application]:
    app = create_app(
        load_settings(
            port=0,
            database_url=f"sqlite:///{tmp_path}/k.db",
            ping_interval=0,
            strict_outgoing=True,
            call_timeout=CALL_TIMEOUT,
            # No CALL the test did not ask for (no GetConfiguration after each boot):
            # every frame a charge point receives here comes from the request under test.
            configuration_sync_on_boot=False,
            shutdown_timeout=1.0,
            log_level="warning",
        )
    )
    await app.start()
    try:
        yield app
    finally:
        async with asyncio.timeout(TIMEOUT):
            await app.stop()


@contextlib.asynccontextmanager
async def http_client(app: Application, token: str | None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.gateway.port}",
        headers=headers,
        timeout=TIMEOUT + CALL_TIMEOUT,
        trust_env=False,  # loopback only: never route through a proxy from the environment
    ) as client:
        yield client


@pytest.fixture
async def admin_token(kilowatt: Application) -> str:
    _, secret = await kilowatt.services.tokens.create("operator", Role.ADMIN)
    return secret


@pytest.fixture
async def api(kilowatt: Application, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the API with an admin token."""
    async with http_client(kilowatt, admin_token) as client:
        yield client


@contextlib.asynccontextmanager
async def connected_charge_point(
    app: Application, charge_point_id: str = CHARGE_POINT_ID
) -> AsyncIterator[ChargePoint]:
    """An ``ocpp`` charge point: registered, connected, booted (Accepted), reading.

    Its wire log is cleared after the boot, so it holds only what the test causes.
    """
    if await app.services.charge_points.get(charge_point_id) is None:
        await app.services.charge_points.register(charge_point_id)
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(
            ws_url(app, charge_point_id),
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            ping_interval=None,
        )
    cp = ChargePoint(charge_point_id, Wire(ws))
    reader = asyncio.create_task(cp.start())
    try:
        boot = await bounded(
            cp.call(
                call.BootNotification(charge_point_model="Volt 22", charge_point_vendor="Acme"),
                suppress=False,
            )
        )
        assert boot.status == "Accepted", boot
        await eventually(
            lambda: app.registry.get(charge_point_id) is not None, "the connection to register"
        )
        cp.wire.frames.clear()
        yield cp
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        async with asyncio.timeout(TIMEOUT):
            await ws.close()
        await eventually(
            lambda: app.registry.get(charge_point_id) is None, "the connection to go away"
        )


@pytest.fixture
async def charge_point(kilowatt: Application) -> AsyncIterator[ChargePoint]:
    async with connected_charge_point(kilowatt) as cp:
        yield cp


@contextlib.asynccontextmanager
async def raw_charge_point(
    app: Application, charge_point_id: str
) -> AsyncIterator[ClientConnection]:
    """A raw websockets charge point (registered, connected, booted): exact frames."""
    if await app.services.charge_points.get(charge_point_id) is None:
        await app.services.charge_points.register(charge_point_id)
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(
            ws_url(app, charge_point_id),
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            ping_interval=None,
        )
    try:
        await ws.send(
            '[2,"boot-1","BootNotification",{"chargePointVendor":"Acme","chargePointModel":"Raw"}]'
        )
        answer = await bounded(ws.recv())
        assert '"Accepted"' in str(answer), answer
        yield ws
    finally:
        async with asyncio.timeout(TIMEOUT):
            await ws.close()
        await eventually(
            lambda: app.registry.get(charge_point_id) is None, "the connection to go away"
        )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the API's error shape with this status and code; return it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    return error
