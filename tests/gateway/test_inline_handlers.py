"""Handlers that answer without waiting (Inline) are called at once, without a task,
unless an earlier CALL of the same charge point is still being handled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kilowatt.app import build_router, build_services
from kilowatt.config import Settings
from kilowatt.gateway.connection import ChargePointConnection
from kilowatt.ocpp16.handlers.registration import require_acceptance
from kilowatt.ocpp16.routes import protocol_spec
from kilowatt.protocol.errors import NotSupportedCallError
from kilowatt.protocol.router import CallContext, Inline, Router
from kilowatt.protocol.session import Session
from tests.memory_transport import frames, memory_connection

NOW = {"currentTime": "2026-03-01T00:00:00Z"}


async def test_an_inline_handler_is_answered_at_once_without_a_task() -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        tasks.append(asyncio.current_task())
        return NOW

    connection, sink = memory_connection({"Heartbeat": Inline(heartbeat)})
    outside = asyncio.current_task()
    connection.message_received('[2,"1","Heartbeat",{}]')
    # Written before anything else ran: no task was created for it.
    assert frames(sink) == [[3, "1", NOW]]
    assert tasks == [outside]
    assert connection._worker is None


async def test_an_inline_call_waits_for_an_earlier_call_still_handled() -> None:
    release = asyncio.Event()

    async def status(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {}

    connection, sink = memory_connection(
        {"StatusNotification": status, "Heartbeat": Inline(lambda ctx, payload: NOW)}
    )
    connection.message_received(
        '[2,"1","StatusNotification",{"connectorId":0,"errorCode":"NoError","status":"Available"}]'
    )
    connection.message_received('[2,"2","Heartbeat",{}]')
    await asyncio.sleep(0)
    assert sink.sent == []  # answers stay in the order of the calls
    release.set()
    await connection.wait_idle()
    assert frames(sink) == [[3, "1", {}], [3, "2", NOW]]


async def test_an_inline_handler_that_fails_gets_its_callerror() -> None:
    def refuse(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        raise NotSupportedCallError("not here")

    def crash(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bug")

    def invalid(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": 5}

    connection, sink = memory_connection({"Heartbeat": Inline(refuse), "Authorize": Inline(crash)})
    connection.message_received('[2,"1","Heartbeat",{}]')
    connection.message_received('[2,"2","Authorize",{"idTag":"T"}]')
    (refused, crashed) = frames(sink)
    assert refused[:3] == [4, "1", "NotSupported"]
    assert crashed[:3] == [4, "2", "InternalError"]

    lenient = ChargePointConnection(
        "CP",
        sink,
        Session(protocol_spec(), handled=Router({"Heartbeat": Inline(invalid)})),
        Router({"Heartbeat": Inline(invalid)}),
    )
    lenient.message_received('[2,"3","Heartbeat",{}]')
    assert frames(sink)[-1][:3] == [4, "3", "InternalError"]  # never the invalid answer


async def test_the_acceptance_guard_keeps_an_inline_handler_inline() -> None:
    accepted: set[str] = set()
    seen: list[str] = []
    routes = require_acceptance(
        {"Heartbeat": Inline(lambda ctx, payload: NOW)},
        is_accepted=accepted.__contains__,
        seen=seen.append,
    )
    assert type(routes["Heartbeat"]) is Inline
    connection, sink = memory_connection(routes)
    connection.message_received('[2,"1","Heartbeat",{}]')
    assert frames(sink)[0][:3] == [4, "1", "SecurityError"] and seen == []
    accepted.add("CP")
    connection.message_received('[2,"2","Heartbeat",{}]')
    assert frames(sink)[1] == [3, "2", NOW] and seen == ["CP"]


async def test_the_server_answers_heartbeats_inline(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'inline.db'}")
    services = build_services(settings)
    try:
        router = build_router(services, settings)
        assert type(router["Heartbeat"]) is Inline
        assert type(router["StatusNotification"]) is not Inline  # it writes
    finally:
        await services.store.close()
