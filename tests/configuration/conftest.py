"""A running Kilowatt (SQLite), an admin API client, and ``ocpp`` charge points that
keep their own configuration key table. Everything over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from ocpp.v16 import call
from websockets.asyncio.client import connect

from kilowatt.app import Application
from kilowatt.services.api_tokens import Role
from tests.app_runner import StartApp, app_starter
from tests.configuration.charge_point import Entry, KeyTableChargePoint, Wire, standard_table

TIMEOUT = 5.0
CALL_TIMEOUT = 2.0

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


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[StartApp]:
    settings = {
        "database_url": f"sqlite:///{tmp_path}/k.db",
        "call_timeout": CALL_TIMEOUT,
        "shutdown_timeout": 1.0,
        "log_level": "warning",
    }
    async with app_starter(lambda _: settings) as start:
        yield start


@pytest.fixture
async def app(start_app: StartApp) -> Application:
    return await start_app()


@contextlib.asynccontextmanager
async def api_client(app: Application) -> AsyncIterator[httpx.AsyncClient]:
    _, secret = await app.services.tokens.create(f"t{id(app)}", Role.ADMIN)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.gateway.port}",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=TIMEOUT + CALL_TIMEOUT,
        trust_env=False,  # loopback only
    ) as client:
        yield client


@pytest.fixture
async def api(app: Application) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app) as client:
        yield client


@contextlib.asynccontextmanager
async def charge_point(
    app: Application,
    charge_point_id: str = "CP1",
    table: dict[str, Entry] | None = None,
    *,
    register: bool = True,
    boot: bool = True,
) -> AsyncIterator[KeyTableChargePoint]:
    """A connected ``ocpp`` charge point (registered and booted unless told not to)."""
    if register and await app.services.charge_points.get(charge_point_id) is None:
        await app.services.charge_points.register(charge_point_id)
    url = f"ws://127.0.0.1:{app.gateway.port}{app.settings.ocpp_path}{charge_point_id}"
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(url, subprotocols=["ocpp1.6"], ping_interval=None)  # type: ignore[list-item]
    cp = KeyTableChargePoint(
        charge_point_id, Wire(ws), standard_table() if table is None else table
    )
    reader = asyncio.create_task(cp.start())
    try:
        await eventually(lambda: app.registry.get(charge_point_id) is not None, "registration")
        if boot:
            await boot_notification(cp)
        yield cp
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        async with asyncio.timeout(TIMEOUT):
            await ws.close()
        await eventually(lambda: app.registry.get(charge_point_id) is None, "disconnection")


async def boot_notification(cp: KeyTableChargePoint) -> Any:
    return await bounded(
        cp.call(
            call.BootNotification(charge_point_model="Volt 22", charge_point_vendor="Acme"),
            suppress=False,
        )
    )


async def synced(app: Application, cp: KeyTableChargePoint, since: datetime | None = None) -> None:
    """Wait until a complete GetConfiguration answer (newer than ``since``) is stored."""

    async def stored() -> bool:
        view = await app.services.configuration.view(cp.id)
        at = view.sync.synced_at if view.sync is not None else None
        return at is not None and (since is None or at > since)

    try:
        async with asyncio.timeout(TIMEOUT):
            while not await stored():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {TIMEOUT} s waiting for the configuration of {cp.id}")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The API's one error shape, with this status and code; return the error."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    return error
