"""The WebSocket client of a simulated charge point: picows when installed, else websockets.

picows (Cython) costs a fraction of websockets per message, which matters with
thousands of simulated charge points; websockets is a dependency of Kilowatt, so
the simulator works on any installation. Both are behind :class:`Link`: messages
come in through a callback, in order; :meth:`Link.send` writes one text message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
from collections.abc import Callable
from typing import Any, Literal, Protocol

__all__ = ["Link", "LinkError", "TransportKind", "connect", "picows_available"]

SUBPROTOCOL = "ocpp1.6"
CLOSE_NORMAL = 1000
MAX_MESSAGE = 1_048_576

TransportKind = Literal["auto", "picows", "websockets"]
OnMessage = Callable[[bytes | str], None]
OnClose = Callable[[], None]


class LinkError(Exception):
    """The connection could not be opened, or is closed."""


class Link(Protocol):
    @property
    def closed(self) -> bool: ...

    async def send(self, data: bytes) -> None:
        """Write one text message; raises LinkError when the connection is closed."""

    async def close(self, timeout: float) -> None:
        """The closing handshake, at most ``timeout`` seconds; then the socket is dropped."""

    def abort(self) -> None:
        """Drop the connection at once (a power cut)."""


def picows_available() -> bool:
    return importlib.util.find_spec("picows") is not None


def _headers(charge_point_id: str, password: str | None) -> list[tuple[str, str]]:
    headers = [("Sec-WebSocket-Protocol", SUBPROTOCOL)]
    if password is not None:
        token = base64.b64encode(f"{charge_point_id}:{password}".encode()).decode()
        headers.append(("Authorization", f"Basic {token}"))
    return headers


async def connect(
    url: str,
    charge_point_id: str,
    *,
    password: str | None,
    on_message: OnMessage,
    on_close: OnClose,
    timeout: float,
    kind: TransportKind = "auto",
) -> Link:
    """Open ``url`` as ``charge_point_id``; raises LinkError (with the reason)."""
    if kind == "picows" or (kind == "auto" and picows_available()):
        return await _connect_picows(url, charge_point_id, password, on_message, on_close, timeout)
    return await _connect_websockets(url, charge_point_id, password, on_message, on_close, timeout)


# ----------------------------------------------------------------------- picows


async def _connect_picows(
    url: str,
    charge_point_id: str,
    password: str | None,
    on_message: OnMessage,
    on_close: OnClose,
    timeout: float,
) -> Link:
    picows: Any = importlib.import_module("picows")

    class Listener(picows.WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.fragments: list[bytes] = []
            self.link: _PicowsLink | None = None

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind in (picows.WSMsgType.TEXT, picows.WSMsgType.BINARY):
                if not frame.fin:
                    self.fragments = [frame.get_payload_as_bytes()]
                    return
                on_message(frame.get_payload_as_bytes())
            elif kind == picows.WSMsgType.CONTINUATION:
                self.fragments.append(frame.get_payload_as_bytes())
                if frame.fin:
                    data = b"".join(self.fragments)
                    self.fragments = []
                    on_message(data)
            elif kind == picows.WSMsgType.CLOSE:
                if not transport.is_close_frame_sent:
                    transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.link is not None:
                self.link.closed = True
            on_close()

    try:
        transport, listener = await asyncio.wait_for(
            picows.ws_connect(
                Listener,
                url,
                extra_headers=_headers(charge_point_id, password),
                websocket_handshake_timeout=timeout,
                enable_auto_pong=True,
                max_frame_size=MAX_MESSAGE,
                read_buffer_init_size=4096,
            ),
            timeout,
        )
    except (OSError, TimeoutError, picows.WSError) as exc:
        raise LinkError(f"{type(exc).__name__}: {exc}") from None
    accepted = transport.response.headers.get("Sec-WebSocket-Protocol")
    if accepted != SUBPROTOCOL:
        transport.disconnect()
        raise LinkError(f"the server did not accept the subprotocol {SUBPROTOCOL}: {accepted!r}")
    link = _PicowsLink(transport, picows.WSMsgType.TEXT)
    listener.link = link
    if transport.is_disconnected:  # closed before we could see it
        link.closed = True
    return link


class _PicowsLink:
    def __init__(self, transport: Any, text: Any) -> None:
        self._transport = transport
        self._text = text
        self.closed = False

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise LinkError("the connection is closed")
        self._transport.send(self._text, data)

    async def close(self, timeout: float) -> None:
        transport = self._transport
        if not self.closed and not transport.is_close_frame_sent:
            transport.send_close(CLOSE_NORMAL)
        try:
            await asyncio.wait_for(transport.wait_disconnected(), timeout)
        except TimeoutError:
            transport.disconnect(graceful=False)

    def abort(self) -> None:
        self._transport.disconnect(graceful=False)


# ------------------------------------------------------------------- websockets


async def _connect_websockets(
    url: str,
    charge_point_id: str,
    password: str | None,
    on_message: OnMessage,
    on_close: OnClose,
    timeout: float,
) -> Link:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidHandshake, InvalidURI
    from websockets.typing import Subprotocol

    headers = [h for h in _headers(charge_point_id, password) if h[0] != "Sec-WebSocket-Protocol"]
    try:
        ws = await ws_connect(
            url,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=headers,
            open_timeout=timeout,
            ping_interval=None,  # the Central System pings; pongs are automatic
            max_size=MAX_MESSAGE,
            proxy=None,
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise LinkError(f"{type(exc).__name__}: {exc}") from None
    if ws.subprotocol != SUBPROTOCOL:
        await ws.close()
        raise LinkError(f"the server did not accept the subprotocol {SUBPROTOCOL}")
    return _WebsocketsLink(ws, on_message, on_close)


class _WebsocketsLink:
    def __init__(self, ws: Any, on_message: OnMessage, on_close: OnClose) -> None:
        self._ws = ws
        self._on_message = on_message
        self._on_close = on_close
        self.closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self._ws:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._on_close()

    async def send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        if self.closed:
            raise LinkError("the connection is closed")
        try:
            await self._ws.send(data, text=True)
        except ConnectionClosed as exc:
            raise LinkError(str(exc)) from None

    async def close(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ws.close(CLOSE_NORMAL), timeout)
        except TimeoutError:
            self.abort()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    def abort(self) -> None:
        self._ws.transport.abort()
