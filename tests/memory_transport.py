"""An in-memory stand-in for a charge point's WebSocket: it keeps what is written; and a
connection on it, for tests of the gateway's connection without sockets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from kilowatt.gateway.connection import ChargePointConnection
from kilowatt.ocpp16.routes import protocol_spec
from kilowatt.protocol.router import Handler, Router
from kilowatt.protocol.session import Session


class MemoryTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_text(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def close(self, code: int, reason: str) -> None:
        return None


def memory_connection(
    routes: Mapping[str, Handler],
) -> tuple[ChargePointConnection, MemoryTransport]:
    """Charge point ``CP``'s connection with ``routes`` (outgoing frames validated
    strictly: a bug of the test's handlers fails), on a :class:`MemoryTransport`."""
    router = Router(routes)
    sink = MemoryTransport()
    session = Session(protocol_spec(), handled=router)
    return ChargePointConnection("CP", sink, session, router, strict=True), sink


def frames(sink: MemoryTransport) -> list[Any]:
    """What was written, decoded."""
    return [orjson.loads(frame) for frame in sink.sent]
