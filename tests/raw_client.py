"""A raw OCPP-J charge point for tests: exact frames out, exact answer frames back."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, ClassVar

import orjson
from websockets.asyncio.client import ClientConnection

TIMEOUT = 5.0


class RawClient:
    BOOT: ClassVar[dict[str, Any]] = {"chargePointVendor": "Acme", "chargePointModel": "Volt 22"}

    def __init__(self, ws: ClientConnection, charge_point_id: str) -> None:
        self.ws = ws
        self.charge_point_id = charge_point_id
        self._ids = itertools.count(1)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        unique_id = f"m{next(self._ids)}"
        await self.ws.send(orjson.dumps([2, unique_id, action, payload]).decode())
        return await self.answer(unique_id)

    async def answer(self, unique_id: str) -> list[Any]:
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
        return await self.result("BootNotification", dict(self.BOOT))
