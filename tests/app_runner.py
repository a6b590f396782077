"""Start Kilowatt applications in tests: on free ports, with test settings, and every
one stopped at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from kilowatt.app import Application, create_app
from kilowatt.clock import Clock
from kilowatt.config import load_settings
from kilowatt.gateway.auth import CredentialStore

StartApp = Callable[..., Awaitable[Application]]

# What every test application has, unless a test says otherwise: a free port, no
# keepalive pings, outgoing frames validated strictly (a bug of ours fails), and the
# message log written in the test's own process (no child process started for each
# of hundreds of applications; tests/events/test_message_log.py runs it both ways).
TEST_SETTINGS: Mapping[str, Any] = {
    "port": 0,
    "ping_interval": 0,
    "strict_outgoing": True,
    "message_log_process": False,
}


@contextlib.asynccontextmanager
async def app_starter(
    defaults: Callable[[int], Mapping[str, Any]], *, stop_timeout: float = 10
) -> AsyncIterator[StartApp]:
    """A ``start(**overrides)`` that starts an application with :data:`TEST_SETTINGS`,
    ``defaults(n)`` (``n``: how many were started before) and the overrides; a clock
    and a credential store may be injected. All are stopped, newest first, on exit."""
    apps: list[Application] = []

    async def start(
        *, clock: Clock | None = None, credentials: CredentialStore | None = None, **overrides: Any
    ) -> Application:
        values = {**TEST_SETTINGS, **defaults(len(apps)), **overrides}
        app = create_app(load_settings(**values), clock=clock, credentials=credentials)
        await app.start()
        apps.append(app)
        return app

    try:
        yield start
    finally:
        for app in reversed(apps):
            async with asyncio.timeout(stop_timeout):
                await app.stop()
