"""The conformance harness: a real `kilowatt serve` process, charge points built on
the `ocpp` package (an independent OCPP 1.6J implementation), and the operator API.

Every charge point records the exact frames on its wire, in order, so that a test
can assert the CALL the Central System sent and the CALLRESULT it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stamp(offset_seconds: float = 0.0) -> str:
    """An OCPP dateTime (UTC, 'Z') relative to now."""
    moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Server:
    """A `kilowatt serve` process and what a test needs to talk to it."""

    port: int
    database_url: str
    token: str
    process: subprocess.Popen[bytes]
    scheme: str = "ws"
    log: Path | None = None

    @property
    def ocpp_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ocpp/"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.scheme == 'wss' else 'http'}://127.0.0.1:{self.port}"

    def api(self, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.http_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=TIMEOUT,
            verify=verify,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _create_token(database_url: str) -> str:
    from kilowatt.clock import SystemClock
    from kilowatt.services.api_tokens import ApiTokenService, Role
    from kilowatt.store.sql.database import open_store
    from kilowatt.store.sql.migrate import upgrade

    store = open_store(database_url)
    try:
        await upgrade(store)
        _, secret = await ApiTokenService(store, SystemClock()).create("conformance", Role.ADMIN)
    finally:
        await store.close()
    return secret


def start_server(directory: Path, **settings: Any) -> Server:
    """Start `python -m kilowatt serve` with ``settings`` as KILOWATT_* variables."""
    port = free_port()
    database_url = f"sqlite:///{directory}/kilowatt.db"
    token = asyncio.run(_create_token(database_url))
    env = {key: value for key, value in os.environ.items() if not key.startswith("KILOWATT_")}
    values: dict[str, Any] = {
        "database_url": database_url,
        "port": port,
        "log_level": "info",
        "ping_interval": 0,
        "call_timeout": 5,
        "strict_outgoing": True,
        # The compliance tool expects no call the test case did not ask for.
        "configuration_sync_on_boot": False,
    }
    values.update(settings)
    for key, value in values.items():
        env[f"KILOWATT_{key.upper()}"] = str(value)
    log = directory / "server.log"
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "kilowatt", "serve"],
        cwd=directory,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    server = Server(
        port=port,
        database_url=database_url,
        token=token,
        process=process,
        scheme="wss" if "tls_cert_file" in settings else "ws",
        log=log,
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"kilowatt serve exited:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"kilowatt serve did not listen within 30 s:\n{log.read_text()}")
        time.sleep(0.05)


class Wire:
    """The connection given to the `ocpp` ChargePoint: records every frame in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[str, list[Any]]] = []
        self.changed = asyncio.Event()

    async def recv(self) -> str:
        message = await self.ws.recv()
        assert isinstance(message, str), "the Central System sent a binary frame"
        self.frames.append(("in", json.loads(message)))
        self.changed.set()
        return message

    async def send(self, message: str) -> None:
        self.frames.append(("out", json.loads(message)))
        self.changed.set()
        await self.ws.send(message)


Answer = Callable[..., Any]


def _handler(action: Action) -> Any:
    """An ``@on`` handler that answers from the test's script for ``action``."""

    async def handle(self: Station, **kwargs: Any) -> Any:
        self.received.append((action.value, kwargs))
        answer = self.answers.get(action.value)
        if answer is None:
            raise AssertionError(f"the test scripted no answer for {action.value}")
        result = answer(**kwargs) if callable(answer) else answer
        if asyncio.iscoroutine(result):
            result = await result
        return result

    # The `ocpp` package finds handlers by function name: it must match the attribute.
    handle.__name__ = f"on_{action.name}"
    return on(action)(handle)


class Station(OcppChargePoint):  # type: ignore[misc]
    """A charge point on the `ocpp` package (2.1.0), scripted by the test.

    Its CALLs go out through the package (which also validates our answers against
    its own copy of the schemas); the Central System's CALLs are answered from
    ``answers[action]``: a ``call_result`` object, or a callable of the request's
    (snake_case) fields returning one. ``wire.frames`` holds every frame, exactly.
    """

    on_reset = _handler(Action.reset)
    on_change_availability = _handler(Action.change_availability)
    on_change_configuration = _handler(Action.change_configuration)
    on_clear_cache = _handler(Action.clear_cache)
    on_data_transfer = _handler(Action.data_transfer)
    on_get_configuration = _handler(Action.get_configuration)
    on_remote_start_transaction = _handler(Action.remote_start_transaction)
    on_remote_stop_transaction = _handler(Action.remote_stop_transaction)
    on_unlock_connector = _handler(Action.unlock_connector)
    on_trigger_message = _handler(Action.trigger_message)

    def __init__(self, charge_point_id: str, wire: Wire) -> None:
        super().__init__(charge_point_id, wire)
        self.wire = wire
        self.answers: dict[str, Any] = {}
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)

    async def send(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Send a raw CALL exactly as given (camelCase); return the answer frame."""
        unique_id = f"raw-{next(self._ids)}"
        before = len(self.wire.frames)
        await self.wire.send(json.dumps([2, unique_id, action, payload]))
        return await self.answer_to(unique_id, before)

    async def answer_to(self, unique_id: str, before: int = 0) -> list[Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for direction, frame in self.wire.frames[before:]:
                    if direction == "in" and frame[0] in (3, 4) and frame[1] == unique_id:
                        return frame
                self.wire.changed.clear()
                await self.wire.changed.wait()

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        frame = await self.send(action, payload)
        assert frame[0] == 3, f"{action}: expected a CALLRESULT, got {frame}"
        answer: dict[str, Any] = frame[2]
        return answer

    def last_exchange(self, action: str) -> tuple[list[Any], list[Any]]:
        """The last CALL of ``action`` on the wire (either side) and its answer."""
        frames = self.wire.frames
        for index in range(len(frames) - 1, -1, -1):
            _, frame = frames[index]
            if frame[0] == 2 and frame[2] == action:
                for _, answer in frames[index + 1 :]:
                    if answer[0] in (3, 4) and answer[1] == frame[1]:
                        return frame, answer
                raise AssertionError(f"{action} was not answered")
        raise AssertionError(f"no {action} on the wire")

    def calls_received(self) -> list[list[Any]]:
        """Every CALL the Central System sent, as on the wire."""
        return [f for d, f in self.wire.frames if d == "in" and f[0] == 2]

    async def wait_for_call(self, action: str, count: int = 1) -> list[Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                calls = [f for f in self.calls_received() if f[2] == action]
                if len(calls) >= count:
                    return calls[count - 1]
                self.wire.changed.clear()
                await self.wire.changed.wait()

    # Convenience for the usual CP→CS messages, through the `ocpp` package.
    async def boot(self) -> Any:
        return await self.call(
            call.BootNotification(charge_point_vendor="Conformance", charge_point_model="CT-1")
        )

    async def status(self, connector_id: int, status: str, error: str = "NoError") -> Any:
        return await self.call(
            call.StatusNotification(
                connector_id=connector_id, error_code=error, status=status, timestamp=stamp()
            )
        )


@contextlib.asynccontextmanager
async def station(
    server: Server,
    charge_point_id: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[Station]:
    ws = await connect(
        server.ocpp_url + charge_point_id,
        subprotocols=subprotocols if subprotocols is not None else ["ocpp1.6"],  # type: ignore[arg-type]
        ssl=ssl_context,
        additional_headers=headers,
        ping_interval=None,
        open_timeout=TIMEOUT,
    )
    wire = Wire(ws)
    cp = Station(charge_point_id, wire)
    reader = asyncio.create_task(cp.start())
    try:
        yield cp
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ws.close()


async def register(api: httpx.AsyncClient, charge_point_id: str, **fields: Any) -> None:
    response = await api.post("/api/v1/charge-points", json={"id": charge_point_id, **fields})
    assert response.status_code == 201, response.text


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT
) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving(directory: Path, **settings: Any) -> AsyncIterator[Server]:
    """`start_server` from an async test (it blocks, so it runs in a thread); stopped on exit."""
    server = await asyncio.to_thread(start_server, directory, **settings)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
