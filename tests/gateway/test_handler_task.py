"""Each incoming CALL is handled in a task of its own, from its very first step.

Handlers and what they call rely on a current task: ``asyncio.timeout`` (which the
database pool uses while it waits for a free connection) refuses to run without one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from kilowatt.gateway.connection import ChargePointConnection
from kilowatt.ocpp16.routes import protocol_spec
from kilowatt.protocol.router import CallContext, Router
from kilowatt.protocol.session import Session
from tests.memory_transport import MemoryTransport


async def test_a_handler_runs_in_a_task_and_may_use_asyncio_timeout() -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        tasks.append(asyncio.current_task())  # before any await
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        return {"currentTime": "2026-03-01T00:00:00Z"}

    router = Router({"Heartbeat": heartbeat})
    sink = MemoryTransport()
    connection = ChargePointConnection("CP", sink, Session(protocol_spec(), handled=router), router)
    outside = asyncio.current_task()
    connection.message_received('[2,"1","Heartbeat",{}]')
    await connection.wait_idle()

    assert len(tasks) == 1 and tasks[0] is not None and tasks[0] is not outside
    frame = orjson.loads(sink.sent[0])
    assert frame[0] == 3, frame  # a CALLRESULT, not an InternalError
