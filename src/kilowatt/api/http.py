"""Serve an ASGI application on connections the gateway's front hands over.

uvicorn's HTTP protocol (httptools) does the HTTP/1.1 work; we only create its
protocol objects and shut its connections down, since the listening socket belongs
to the gateway (one port for OCPP and the API).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.server import ServerState

__all__ = ["AsgiHttpServer"]

log = logging.getLogger("kilowatt.api")


class AsgiHttpServer:
    def __init__(self, app: Any, *, log_level: str = "warning") -> None:
        self._config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            http="httptools",
            access_log=False,
            log_level=log_level,
            proxy_headers=False,
            server_header=False,
        )
        self._config.load()
        self._state = ServerState()

    def protocol_factory(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self._config.http_protocol_class(  # type: ignore[call-arg]
            config=self._config, server_state=self._state, app_state={}
        )
        return protocol

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Finish requests in flight (bounded), then close idle keep-alive connections."""
        for connection in list(self._state.connections):
            connection.shutdown()
        tasks = list(self._state.tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
