"""A running Kilowatt on a fresh SQLite file, raw OCPP-J clients, an SSE reader and
a tiny HTTP receiver for webhooks: everything on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from kilowatt.app import Application
from kilowatt.services.api_tokens import Role
from tests.app_runner import StartApp, app_starter
from tests.raw_client import RawClient

TIMEOUT = 5.0


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[StartApp]:
    """Start an app (settings overridable, clock injectable); every one is stopped."""
    settings = {
        "database_url": f"sqlite:///{tmp_path}/k.db",
        "boot_policy": "accept-all",
        "message_log_flush_interval": 0.05,
        "shutdown_timeout": 2.0,
        "log_level": "warning",
    }
    async with app_starter(lambda _: settings) as start:
        yield start


class Client(RawClient):
    """A raw OCPP-J charge point: sends exact frames, returns the exact answers."""

    BOOT: ClassVar[dict[str, Any]] = {
        "chargePointVendor": "Acme",
        "chargePointModel": "Volt 22",
        "firmwareVersion": "1.2",
    }


@contextlib.asynccontextmanager
async def charge_point(app: Application, charge_point_id: str = "CP1") -> AsyncIterator[Client]:
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


async def admin_token(app: Application, name: str = "t") -> dict[str, str]:
    _, secret = await app.services.tokens.create(name, Role.ADMIN)
    return {"Authorization": f"Bearer {secret}"}


async def read_token(app: Application, name: str = "r") -> dict[str, str]:
    _, secret = await app.services.tokens.create(name, Role.READ)
    return {"Authorization": f"Bearer {secret}"}


@contextlib.asynccontextmanager
async def api_client(app: Application) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: loopback only, never through a proxy from the environment.
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.gateway.port}", trust_env=False, timeout=TIMEOUT
    ) as client:
        yield client


class SseReader:
    """Reads a text/event-stream response one event (or comment) at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def _line(self) -> str:
        line: str = await anext(self._lines)
        return line

    async def comment(self, text: str, timeout: float = TIMEOUT) -> None:
        """Read until a comment containing ``text`` (events in between are an error)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self._line()
                assert not line or line.startswith(":"), f"an event before {text!r}: {line}"
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    if text in line:
                        return

    async def event(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event as {"id", "event", "data" (decoded JSON)}; comments are kept."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = await self._line()
                if not line:
                    if fields:
                        return {
                            "id": int(fields["id"]),
                            "event": fields["event"],
                            "data": orjson.loads(fields["data"]),
                        }
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")


@dataclass
class ReceivedRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records requests and answers with
    the statuses it is given (200 once they run out)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = deque(statuses or [])
        self.requests: list[ReceivedRequest] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=TIMEOUT)
        await self._server.wait_closed()

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[ReceivedRequest]:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.statuses.popleft() if self.statuses else 200
                self.requests.append(
                    ReceivedRequest(method, target, headers, body, status, time.monotonic())
                )
                self._arrived.set()
                writer.write(f"HTTP/1.1 {status} Status\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)
