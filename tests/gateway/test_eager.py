"""Incoming CALLs' handling starts eagerly: a task only when a handler must wait."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from kilowatt.gateway.connection import _start_eagerly

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="outside")


async def test_a_coroutine_that_waits_for_nothing_finishes_before_the_call_returns() -> None:
    done: list[str] = []

    async def quick() -> None:
        marker.set("inside")
        done.append(marker.get())

    assert _start_eagerly(asyncio.get_running_loop(), quick()) is None
    assert done == ["inside"]
    assert marker.get() == "outside"  # it ran in a copy of the context


async def test_a_coroutine_that_waits_goes_on_in_a_task_in_the_same_context() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    seen: list[Any] = []

    async def slow() -> None:
        marker.set("inside")
        seen.append(await future)
        await asyncio.sleep(0)  # a bare yield too
        seen.append(marker.get())

    task = _start_eagerly(loop, slow())
    assert task is not None and not task.done()
    assert seen == []
    future.set_result(42)
    await task
    assert seen == [42, "inside"]
    assert marker.get() == "outside"


async def test_an_exception_from_what_it_awaits_reaches_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    caught: list[BaseException] = []

    async def failing() -> None:
        try:
            await future
        except ValueError as exc:
            caught.append(exc)
            raise RuntimeError("after") from exc

    task = _start_eagerly(loop, failing())
    assert task is not None
    future.set_exception(ValueError("boom"))
    with pytest.raises(RuntimeError, match="after"):
        await task
    assert [str(exc) for exc in caught] == ["boom"]


async def test_cancelling_the_task_cancels_what_the_coroutine_waits_for() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    cleaned: list[str] = []

    async def waiting() -> None:
        try:
            await future
        finally:
            cleaned.append("finally")

    task = _start_eagerly(loop, waiting())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert future.cancelled()
    assert cleaned == ["finally"]


async def test_a_coroutine_may_catch_its_cancellation_and_finish() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    async def stubborn() -> None:
        try:
            await future
        except asyncio.CancelledError:
            await asyncio.sleep(0)

    task = _start_eagerly(loop, stubborn())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    await task
    assert not task.cancelled()


async def test_an_exception_in_the_first_step_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise RuntimeError("bug")

    assert _start_eagerly(asyncio.get_running_loop(), broken()) is None
    assert "incoming call handling failed" in caplog.text
