"""A real Kilowatt on 127.0.0.1 and simulated charge points connected to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kilowatt.app import Application, create_app
from kilowatt.config import load_settings
from kilowatt.domain.models import IdTag
from kilowatt.services.api_tokens import Role
from kilowatt.simulator import Scenario, Simulation, SimulationConfig

# Upper bound of every single wait in this package.
TIMEOUT = 10.0
CHARGE_POINTS = 5

# Short sessions, back to back: a few seconds show every step of a session.
FAST = Scenario(
    name="fast",
    idle_seconds=(0.1, 0.4),
    session_seconds=(1.0, 2.0),
    meter_interval=1,
    reboot_seconds=0.2,
)
# No driver turns up on their own: only what the test asks for happens.
QUIET = Scenario(
    name="quiet",
    idle_seconds=3600,
    session_seconds=3600,
    meter_interval=1,
    reboot_seconds=0.2,
)


async def eventually(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {TIMEOUT} s waiting for: {what}")


def ocpp_url(app: Application) -> str:
    return f"ws://127.0.0.1:{app.gateway.port}{app.settings.ocpp_path}"


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
    try:
        yield app
    finally:
        async with asyncio.timeout(TIMEOUT):
            await app.stop()


async def register_tags(app: Application, charge_points: int, connectors: int = 2) -> None:
    """The id tags the simulator uses by default (``SIM00001C1`` …), all Accepted."""
    await app.services.authorization.import_id_tags(
        IdTag(f"SIM{i:05d}C{c}")
        for i in range(1, charge_points + 1)
        for c in range(1, connectors + 1)
    )


@contextlib.asynccontextmanager
async def simulation(
    app: Application, scenario: Scenario, charge_points: int = CHARGE_POINTS, **options: Any
) -> AsyncIterator[Simulation]:
    """Simulated charge points, all booted; stopped (and checked for errors) at the end."""
    running = Simulation(
        SimulationConfig(
            url=ocpp_url(app),
            charge_points=charge_points,
            scenario=scenario,
            seed=7,
            call_timeout=5.0,
            **options,
        )
    )
    await running.start()
    try:

        async def booted() -> bool:
            return all(cp.booted for cp in running.charge_points.values())

        await eventually(booted, "every simulated charge point to boot")
        yield running
    finally:
        async with asyncio.timeout(30):
            result = await running.stop()
    assert result.errors == 0, result.first_errors


@contextlib.asynccontextmanager
async def api_client(app: Application) -> AsyncIterator[httpx.AsyncClient]:
    _, secret = await app.services.tokens.create("t", Role.ADMIN)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.gateway.port}",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=TIMEOUT + 5,
        trust_env=False,  # loopback only: never through a proxy from the environment
    ) as client:
        yield client
