"""Each incoming CALL is handled in a task of its own, from its very first step.

Handlers and what they call rely on a current task: ``asyncio.timeout`` (which the
database pool uses while it waits for a free connection) refuses to run without one.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from kilowatt.protocol.router import CallContext
from tests.memory_transport import frames, memory_connection


async def test_a_handler_runs_in_a_task_and_may_use_asyncio_timeout() -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        tasks.append(asyncio.current_task())  # before any await
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        return {"currentTime": "2026-03-01T00:00:00Z"}

    connection, sink = memory_connection({"Heartbeat": heartbeat})
    outside = asyncio.current_task()
    connection.message_received('[2,"1","Heartbeat",{}]')
    await connection.wait_idle()

    assert len(tasks) == 1 and tasks[0] is not None and tasks[0] is not outside
    frame = frames(sink)[0]
    assert frame[0] == 3, frame  # a CALLRESULT, not an InternalError


STATUS = (
    '[2,"{}","StatusNotification",{{"connectorId":1,"errorCode":"NoError","status":"Available"}}]'
)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task start: Python ≥ 3.12")
async def test_a_handler_that_does_not_wait_is_answered_at_once() -> None:
    # Its task starts eagerly: the answer is written before message_received returns,
    # with no turn of the event loop in between (and no task left behind).
    tasks: list[asyncio.Task[Any] | None] = []

    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        tasks.append(asyncio.current_task())
        # Refused outside a task: this one runs in its task, though from message_received.
        async with asyncio.timeout(5):  # noqa: ASYNC100 - entering it is the test
            pass
        return {"currentTime": "2026-03-01T00:00:00Z"}

    connection, sink = memory_connection({"Heartbeat": heartbeat})
    connection.message_received('[2,"1","Heartbeat",{}]')

    assert [frame[:2] for frame in frames(sink)] == [[3, "1"]]
    assert tasks[0] is not None and tasks[0] is not asyncio.current_task()
    assert connection._worker is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task start: Python ≥ 3.12")
async def test_a_handler_that_waits_starts_at_once_and_calls_after_it_queue() -> None:
    # Its first step runs inside message_received; its answer comes when what it
    # waits for is done, and a CALL that arrives meanwhile waits its turn.
    release = asyncio.get_running_loop().create_future()
    order: list[str] = []

    async def status(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        order.append(f"start {ctx.unique_id}")
        await release
        order.append(f"end {ctx.unique_id}")
        return {}

    connection, sink = memory_connection({"StatusNotification": status})
    connection.message_received(STATUS.format("a"))
    assert order == ["start a"] and sink.sent == []
    connection.message_received(STATUS.format("b"))
    assert order == ["start a"]  # queued behind the first
    release.set_result(None)
    await connection.wait_idle()

    assert order == ["start a", "end a", "start b", "end b"]
    assert [frame[:2] for frame in frames(sink)] == [[3, "a"], [3, "b"]]
    assert connection._worker is None


async def test_calls_are_answered_in_order_whether_or_not_their_handlers_wait() -> None:
    # On every Python: a handler that waits, then one that does not, then one that
    # waits again, answered in the order they came.
    gate = asyncio.Event()

    async def status(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return {}

    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": "2026-03-01T00:00:00Z"}

    connection, sink = memory_connection({"StatusNotification": status, "Heartbeat": heartbeat})
    connection.message_received(STATUS.format("1"))
    connection.message_received('[2,"2","Heartbeat",{}]')
    connection.message_received(STATUS.format("3"))
    gate.set()
    await connection.wait_idle()
    connection.message_received('[2,"4","Heartbeat",{}]')
    await connection.wait_idle()

    assert [frame[1] for frame in frames(sink)] == ["1", "2", "3", "4"]
    assert connection._worker is None
