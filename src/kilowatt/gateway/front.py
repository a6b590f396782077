"""One listening port, two servers: OCPP WebSockets and HTTP.

The front protocol reads the head of the first request on a new connection and
hands the connection over — the transport and the bytes read so far — to the
OCPP WebSocket server when the path lies under the OCPP prefix, or to the HTTP
server (the operator API) otherwise. Each keeps the connection from then on, so
the hot path of charge point traffic pays nothing for the API sharing its port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, cast

__all__ = ["FrontProtocol", "NotFoundProtocol"]

log = logging.getLogger("kilowatt.gateway")

MAX_HEAD: Final = 16 * 1024
ProtocolFactory = Callable[[], asyncio.Protocol]


class NotFoundProtocol(asyncio.Protocol):
    """Answers any HTTP request with 404 and closes (no HTTP server configured here)."""

    def __init__(self, message: bytes = b"Not Found\n") -> None:
        self._message = message

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit asyncio's classes: cast, never isinstance.
        stream = cast(asyncio.WriteTransport, transport)
        body = self._message
        stream.write(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        stream.close()

    def data_received(self, data: bytes) -> None:
        pass


class FrontProtocol(asyncio.Protocol):
    __slots__ = ("_buffer", "_http", "_ocpp", "_prefix", "_transport")

    def __init__(self, ocpp: ProtocolFactory, http: ProtocolFactory, ocpp_prefix: str) -> None:
        self._ocpp = ocpp
        self._http = http
        self._prefix = ocpp_prefix.rstrip("/").encode("latin-1")
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buffer = self._buffer
        buffer += data
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            if len(buffer) > MAX_HEAD:
                transport.close()
            return
        # Request line: METHOD SP request-target SP HTTP-version (RFC 9112 §3).
        parts = bytes(buffer[:line_end]).split(b" ")
        target = parts[1] if len(parts) == 3 else b""
        path = target.split(b"?", 1)[0]
        is_ocpp = path == self._prefix or path.startswith(self._prefix + b"/")
        protocol = self._ocpp() if is_ocpp else self._http()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(bytes(buffer))
        self._buffer = bytearray()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
