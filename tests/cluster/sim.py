"""A small OCPP 1.6J charge point for the cluster tests: raw frames, no ``ocpp`` package.

It calls the Central System (:meth:`SimChargePoint.call`) and answers its CALLs as
``answers`` says: a payload, :data:`ERROR` (a CALLERROR) or :data:`SILENT` (no
answer at all); anything not listed is answered ``{"status": "Accepted"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = ["ERROR", "SILENT", "CallRejected", "SimChargePoint"]

CALL, CALLRESULT, CALLERROR = 2, 3, 4
ERROR = "error"
SILENT = "silent"
TIMEOUT = 10.0


class CallRejected(Exception):
    """The Central System answered CALLERROR."""


class SimChargePoint:
    def __init__(
        self,
        charge_point_id: str,
        answers: dict[str, Any] | None = None,
        *,
        timeout: float = TIMEOUT,
    ) -> None:
        self.id = charge_point_id
        self.timeout = timeout  # bound of every wait: connecting, each call
        self.answers = answers or {}
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def connect(self, base_url: str, *, boot: bool = True) -> None:
        """Open the WebSocket (``base_url`` ends with the OCPP path) and boot."""
        self.closed.clear()
        try:
            async with asyncio.timeout(self.timeout):
                self.ws = await connect(
                    base_url + self.id,
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    ping_interval=None,
                    open_timeout=self.timeout,
                    close_timeout=2,
                )
        except (InvalidHandshake, ConnectionClosed) as exc:  # e.g. the server died meanwhile
            raise ConnectionError(f"cannot connect: {exc!r}") from None
        self._reader = asyncio.get_running_loop().create_task(self._read(self.ws))
        if boot:
            answer = await self.call(
                "BootNotification", {"chargePointVendor": "Sim", "chargePointModel": "Cluster"}
            )
            assert answer["status"] == "Accepted", answer

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        ws = self.ws
        if ws is None:
            raise ConnectionError("not connected")
        unique_id = f"{self.id}-{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[unique_id] = future
        try:
            try:
                await ws.send(orjson.dumps([CALL, unique_id, action, payload]).decode())
            except ConnectionClosed as exc:
                raise ConnectionError(f"connection closed: {exc}") from None
            async with asyncio.timeout(self.timeout):
                result: dict[str, Any] = await future
            return result
        finally:
            self._pending.pop(unique_id, None)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame[0] == CALL:
                    await self._answer(ws, frame[1], frame[2], frame[3])
                    continue
                future = self._pending.get(frame[1])
                if future is None or future.done():
                    continue
                if frame[0] == CALLRESULT:
                    future.set_result(frame[2])
                else:
                    future.set_exception(CallRejected(f"{frame[2]}: {frame[3]}"))
        except ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            self.closed.set()

    async def _answer(
        self, ws: ClientConnection, unique_id: str, action: str, payload: Any
    ) -> None:
        self.received.append((action, payload))
        answer = self.answers.get(action, {"status": "Accepted"})
        if answer == SILENT:
            return
        if answer == ERROR:
            frame = [CALLERROR, unique_id, "NotSupported", "not here", {"sim": True}]
        else:
            frame = [CALLRESULT, unique_id, answer]
        await ws.send(orjson.dumps(frame).decode())

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws is not None else None

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason if self.ws is not None else None

    async def close(self) -> None:
        ws, reader = self.ws, self._reader
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await ws.close()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a network failure)."""
        if self.ws is not None:
            self.ws.transport.abort()
