"""The WebSocket layer of an OCPP connection: an asyncio protocol of our own.

``websockets`` does the protocol work through its sans-I/O
:class:`~websockets.server.ServerProtocol`: parsing the upgrade request and writing
the response, pings and pongs, the closing handshake, fragmented messages, protocol
errors and size limits. This module does the I/O around it (and the UTF-8 check of
text messages, RFC 6455 §8.1), so that a message costs little on the event loop:

* push, not pull: every complete message goes straight from ``data_received`` to
  a :class:`MessageListener` (the charge point connection), synchronously — no
  queue of futures between the socket and the session;
* the common frame takes a short cut: the stream is split into frames here (the
  header says how long each is, RFC 6455 §5.2), and an unfragmented, masked text
  or binary frame within the size limit — every OCPP message in practice — is
  unmasked (websockets' C routine) and delivered directly. Every other frame
  (control frames, fragments, anything invalid) goes whole through the sans-I/O
  protocol, which therefore always sees frame boundaries and behaves as if it had
  parsed the whole stream;
* writes are synchronous: a text frame is framed and handed to the transport at
  once, with no lock and no drain. Flow control goes the other way: while the
  transport asks us to stop writing (its buffer is full because the peer does not
  read), we stop reading that peer, so it cannot make us buffer answers without
  bound;
* timers instead of tasks: the keepalive ping, its timeout, the opening handshake
  deadline and the closing handshake deadline are ``loop.call_later`` handles.

The upgrade checks (path, subprotocol, credentials) are asynchronous, so the
gateway runs them in a task it starts from :attr:`on_request`; it then calls
:meth:`WebSocket.accept` or :meth:`WebSocket.reject`, and :meth:`WebSocket.attach`
once it is ready for messages (reading stays paused in between).
"""

from __future__ import annotations

import asyncio
import http
import logging
import struct
from collections.abc import Callable, Sequence
from random import getrandbits
from typing import Any, Final, Protocol, cast

from websockets.frames import BINARY, CONT, PONG, TEXT
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, CONNECTING, OPEN, State
from websockets.server import ServerProtocol
from websockets.typing import LoggerLike, Subprotocol

try:  # websockets' C routine, as websockets.frames uses it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets build without the C extension
    from websockets.utils import apply_mask

__all__ = ["MessageListener", "WebSocket"]

log = logging.getLogger("kilowatt.gateway")

CLOSE_INVALID_DATA: Final = 1007
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_ABNORMAL: Final = 1006

# RFC 6455 §5.2: FIN set, opcode 0x1 (text); a server never masks (§5.1), so the
# header is this byte, the payload length (7 bits, or 126 + 16 bits, or 127 +
# 64 bits) and nothing else.
_FIN_TEXT: Final = 0x81
_SHORT_HEADERS: Final = tuple(bytes((_FIN_TEXT, length)) for length in range(126))
_LENGTH_16 = struct.Struct("!BBH").pack
_LENGTH_64 = struct.Struct("!BBQ").pack
# The first header byte of the frames that take the short cut: FIN, no RSV bit (no
# extension is negotiated), opcode text or binary.
_FIN_BINARY: Final = 0x82
_SHORT_CUT: Final = frozenset({_FIN_TEXT, _FIN_BINARY})
_MASKED: Final = 0x80
# Keepalive without the sans-I/O protocol (its generator-based parser and frame
# objects, for every pong of thousands of charge points): FIN + opcode ping (0x9) of
# our 4-byte payload, written as is, and FIN + opcode pong (0xA) read as is.
_PING_HEADER: Final = bytes((0x89, 4))
_FIN_PONG: Final = 0x8A
_MAX_CONTROL: Final = 125  # RFC 6455 §5.5: a control frame's payload
_END_OF_HEAD: Final = b"\r\n\r\n"  # RFC 9112 §2.1: the empty line after the fields


class MessageListener(Protocol):
    """Who gets the messages of an open WebSocket (the charge point connection)."""

    def message_received(self, data: str | bytes) -> None:
        """A complete message: ``str`` for a text message, ``bytes`` for a binary one."""

    def connection_closed(self) -> None:
        """No message will come or go any more: the closing handshake started or the
        TCP connection is gone. Called once."""


class _ServerProtocol(ServerProtocol):
    """The sans-I/O server protocol, answering with the subprotocol the gateway chose."""

    chosen: Subprotocol | None = None

    def select_subprotocol(self, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        # The gateway has already checked the offer against OCPP-J 1.6 §3.1.2
        # (including "none offered", which websockets would refuse by default).
        return self.chosen


class WebSocket(asyncio.Protocol):
    """One server-side WebSocket connection; see the module docstring."""

    __slots__ = (
        "__weakref__",
        "_close_timeout",
        "_close_timer",
        "_connected",
        "_debug",
        "_ended",
        "_fragment_text",
        "_fragments",
        "_framing",
        "_head_tail",
        "_held",
        "_listener",
        "_loop",
        "_lost",
        "_max_size",
        "_needed",
        "_open",
        "_open_timeout",
        "_open_timer",
        "_pending",
        "_ping_interval",
        "_ping_payload",
        "_ping_sent",
        "_ping_timeout",
        "_ping_timer",
        "_reading_paused",
        "_write_paused",
        "on_request",
        "protocol",
        "request",
        "transport",
    )

    def __init__(
        self,
        on_request: Callable[[WebSocket, Request], None],
        *,
        max_size: int | None = 1_048_576,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float | None = 10.0,
        close_timeout: float | None = 10.0,
        logger: LoggerLike | None = None,
    ) -> None:
        self.on_request = on_request
        self.protocol = _ServerProtocol(max_size=max_size, logger=logger)
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self._loop = asyncio.get_running_loop()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._max_size = max_size
        self._debug = self.protocol.debug  # websockets logs every frame: no short cut
        self._listener: MessageListener | None = None
        # Bytes not given to anyone yet: after the upgrade request until attach(),
        # then a frame that has not arrived whole, of which _needed bytes are needed
        # before it is worth looking at again (so that a frame trickling in byte by
        # byte costs linear time, not quadratic).
        self._pending = bytearray()
        self._needed = 0
        self._head_tail = b""  # the last bytes of the request head fed so far
        self._framing = False  # from attach() on: data_received splits frames
        self._fragments: list[bytes] | None = None
        self._fragment_text = False
        self._connected = False
        self._open = False  # OPEN and connected: messages go both ways
        self._ended = False
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._held = False  # reading paused from the request until attach()
        self._write_paused = False
        self._reading_paused = False
        self._open_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._ping_sent = 0.0

    # ----------------------------------------------------------- properties

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def closed(self) -> bool:
        """True once the TCP connection is closed."""
        return self._lost.done()

    @property
    def remote_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("peername")

    def get_extra_info(self, name: str) -> Any:
        """The transport's extra information (``ssl_object``, ``peername``, ...)."""
        return None if self.transport is None else self.transport.get_extra_info(name)

    @property
    def close_code(self) -> int | None:
        """The close code of the closing handshake: the peer's if it sent one, else
        ours; 1006 (RFC 6455 §7.1.5) for a connection that ended without one."""
        protocol = self.protocol
        close = protocol.close_rcvd or protocol.close_sent
        if close is not None:
            return int(close.code)
        return CLOSE_ABNORMAL if protocol.state is CLOSED else None

    @property
    def close_reason(self) -> str | None:
        protocol = self.protocol
        close = protocol.close_rcvd or protocol.close_sent
        if close is not None:
            return close.reason
        return "" if protocol.state is CLOSED else None

    # ------------------------------------------------------------ handshake

    def respond(self, status: int, text: str) -> Response:
        """A plain text HTTP response refusing the upgrade (send it with :meth:`reject`)."""
        return self.protocol.reject(http.HTTPStatus(status), text)

    def reject(self, response: Response) -> None:
        """Send ``response`` (not a 101) and close the connection once it is written."""
        if not self._can_respond():
            return
        self._cancel_open_timer()
        self.protocol.send_response(response)
        self._flush()
        self._unhold()
        self._state_changed()

    def accept(self, request: Request, subprotocol: str | None, *, server: str) -> bool:
        """Answer the upgrade (RFC 6455 §4.2.2). True when the WebSocket is open.

        websockets still checks the request itself (method, ``Upgrade``,
        ``Sec-WebSocket-Key``, version) and answers 400/405/426 when it is not a
        WebSocket upgrade; then this returns False.
        """
        if not self._can_respond():
            return False
        protocol = self.protocol
        protocol.chosen = None if subprotocol is None else Subprotocol(subprotocol)
        response = protocol.accept(request)
        response.headers["Server"] = server
        self._cancel_open_timer()
        protocol.send_response(response)
        self._flush()
        if protocol.state is not OPEN:
            self._unhold()
        self._state_changed()
        return protocol.state is OPEN

    def _can_respond(self) -> bool:
        # The peer may have gone (or sent a close frame, which makes the sans-I/O
        # protocol end the stream) while the gateway was checking credentials.
        protocol = self.protocol
        return self._connected and protocol.state is CONNECTING and not protocol.eof_sent

    def attach(self, listener: MessageListener) -> None:
        """Start delivering messages to ``listener``: those that arrived meanwhile
        first, then the rest as they come; start the keepalive."""
        self._listener = listener
        self._framing = True
        if self._pending:
            self._frames(b"")
        self._state_changed()
        if self._ended:
            return
        self._unhold()
        if self._ping_interval is not None:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    # ------------------------------------------------------------- messages

    def send_text(self, frame: bytes) -> None:
        """Write one text message (UTF-8 ``frame``) now. Dropped once the closing
        handshake has started: RFC 6455 §5.5.1 allows no data frame after a close."""
        if not self._open:
            return
        transport = self.transport
        assert transport is not None
        length = len(frame)
        if length < 126:
            transport.write(_SHORT_HEADERS[length] + frame)
        elif length < 65536:
            transport.write(_LENGTH_16(_FIN_TEXT, 126, length) + frame)
        else:
            transport.write(_LENGTH_64(_FIN_TEXT, 127, length) + frame)

    def close(self, code: int = 1000, reason: str = "") -> asyncio.Future[None]:
        """Start the closing handshake now (RFC 6455 §7.1.2) unless it has started;
        the result completes when the TCP connection is closed (after
        ``close_timeout`` at the latest, when the peer does not answer)."""
        protocol = self.protocol
        if self._connected:
            if protocol.state is OPEN:
                protocol.send_close(code, reason)
                self._flush()
                self._state_changed()
            elif protocol.state is CONNECTING:
                self.abort()
        return asyncio.shield(self._lost)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        await asyncio.shield(self._lost)

    def abort(self) -> None:
        """Drop the TCP connection at once, without any closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    # ---------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit asyncio's classes: cast, never isinstance.
        self.transport = cast(asyncio.Transport, transport)
        self._connected = True
        if self._open_timeout is not None:
            self._open_timer = self._loop.call_later(self._open_timeout, self._open_expired)

    def data_received(self, data: bytes) -> None:
        if self._framing:
            self._frames(data)
        elif self.request is None:
            self._head(data)
        elif self._held:
            # Reading is paused, but a transport may still hand over what it had
            # (TLS): frames wait for attach() like those that came with the request.
            self._pending += data
        else:  # a refused upgrade: the sans-I/O protocol discards what follows
            self._feed(data)

    def eof_received(self) -> bool | None:
        # A TCP half-close without a closing handshake: the sans-I/O protocol fails
        # the connection (1006, RFC 6455 §7.1.5).
        self.protocol.receive_eof()
        self._flush()
        self._state_changed()
        # The WebSocket is over either way; let the transport close its side.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        self.protocol.receive_eof()  # idempotent; the state is CLOSED from here on
        self.protocol.data_to_send()  # nothing can be written any more
        self._cancel_open_timer()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._state_changed()
        if self._ping_timer is not None:  # never attached: no keepalive to stop
            self._ping_timer.cancel()
            self._ping_timer = None
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -------------------------------------------------------------- reading

    def _head(self, data: bytes) -> None:
        """Until the upgrade request is complete: the sans-I/O protocol gets the bytes
        of the request head and nothing more, so that it is at a frame boundary when
        the frames begin (a client may send its first frames without waiting for
        the 101); those are kept for attach()."""
        tail = self._head_tail
        end = (tail + data).find(_END_OF_HEAD)
        if end < 0:
            self._head_tail = data[-3:] if len(data) >= 3 else (tail + data)[-3:]
            self._feed(data)
            return
        cut = end + len(_END_OF_HEAD) - len(tail)
        self._pending += data[cut:]
        self._feed(data[:cut])

    def _frames(self, data: bytes) -> None:
        """Split the stream into frames; see the module docstring (RFC 6455 §5.2)."""
        pending = self._pending
        buffer: bytes | bytearray
        if pending:
            pending += data
            if len(pending) < self._needed and self._open:
                return
            buffer, self._pending = pending, bytearray()
        else:
            buffer = data
        size = len(buffer)
        offset = 0
        needed = 0  # > 0: the next frame has not arrived whole; bytes it needs from offset
        view = memoryview(buffer)
        max_size = self._max_size
        while self._open:
            start = offset + 2
            if size < start:
                needed = 2
                break
            first = buffer[offset]
            second = buffer[offset + 1]
            length = second & 0x7F
            if length == 126:  # 16-bit extended payload length
                start += 2
                if size < start:
                    needed = 4
                    break
                length = int.from_bytes(buffer[offset + 2 : start], "big")
            elif length == 127:  # 64-bit extended payload length
                start += 8
                if size < start:
                    needed = 10
                    break
                length = int.from_bytes(buffer[offset + 2 : start], "big")
            if not second & _MASKED or (max_size is not None and length > max_size):
                # A client frame must be masked (RFC 6455 §5.1), and one beyond the
                # size limit must not be buffered: the sans-I/O protocol fails the
                # connection (1002, 1009) from the header alone.
                break
            end = start + 4 + length  # the 4-byte masking key, then the payload
            if size < end:
                needed = end - offset
                break
            if first in _SHORT_CUT and self._fragments is None:
                if self._debug:
                    self._feed(buffer[offset:end])
                else:
                    payload = apply_mask(view[start + 4 : end], buffer[start : start + 4])
                    self._message(first == _FIN_TEXT, payload)
            elif first == _FIN_PONG and length <= _MAX_CONTROL and not self._debug:
                # Control frames may come between fragments (§5.4): no state to keep.
                self._pong(apply_mask(view[start + 4 : end], buffer[start : start + 4]))
            else:
                self._feed(buffer[offset:end])
            offset = end
        if needed:
            self._pending += view[offset:]
            self._needed = needed
            view.release()
            return
        view.release()
        # Closing (the sans-I/O protocol completes the handshake or discards what
        # follows), or a frame it must refuse: the rest goes to the protocol.
        if offset < size:
            self._feed(buffer[offset:])

    def _feed(self, data: bytes | bytearray) -> None:
        """Give bytes to the sans-I/O protocol and act on what it makes of them."""
        if not self._connected:
            return  # after connection_lost() it has seen the end of the stream
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        # Pongs to the peer's pings (RFC 6455 §5.5.2), the echo of its close frame
        # (§5.5.1), the handshake refusal or the end of the stream after a
        # failure: written right away.
        self._flush()
        if events:
            if self._listener is not None:
                self._deliver(events)
            else:
                self._hold(events)
        if protocol.state is not OPEN:
            self._state_changed()

    def _hold(self, events: list[Any]) -> None:
        """Before a listener is attached: the upgrade request (no frame is fed yet)."""
        for event in events:
            if type(event) is Request:
                self.request = event
                # Nothing more is read until the gateway is ready for messages:
                # a client that sends a burst right after its request waits for it.
                self._held = True
                self._update_reading()
                self.on_request(self, event)

    def _deliver(self, frames: list[Any]) -> None:
        for frame in frames:
            if self._ended:
                # We closed (or failed) the connection while handling a message, or
                # the peer goes on after our close frame: nothing more is delivered
                # (RFC 6455 §7.1.7, §1.4).
                return
            opcode = frame.opcode
            if opcode is TEXT or opcode is BINARY:
                if frame.fin:
                    self._message(opcode is TEXT, frame.data)
                else:
                    # RFC 6455 §5.4: a fragmented message; websockets checks the
                    # sequence of opcodes and the total size against max_size.
                    self._fragments = [frame.data]
                    self._fragment_text = opcode is TEXT
            elif opcode is CONT:
                fragments = self._fragments
                assert fragments is not None
                fragments.append(frame.data)
                if frame.fin:
                    self._fragments = None
                    self._message(self._fragment_text, b"".join(fragments))
            elif opcode is PONG:
                self._pong(frame.data)
            # PING and CLOSE were answered by the sans-I/O protocol already.

    def _message(self, text: bool, data: bytes) -> None:
        listener = self._listener
        assert listener is not None
        message: str | bytes
        if text:
            try:
                message = data.decode()
            except UnicodeDecodeError as exc:
                # RFC 6455 §8.1: text that is not UTF-8 fails the connection (1007).
                self._fail(CLOSE_INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return
        else:
            message = bytes(data)
        try:
            listener.message_received(message)
        except Exception:
            log.exception("message handling failed")
            self._fail(CLOSE_INTERNAL_ERROR, "internal error")

    def _unhold(self) -> None:
        # Reading again: for messages once attached; after a refusal, to see the
        # peer's end of the stream (and close) instead of waiting out close_timeout.
        self._held = False
        self._update_reading()

    def _update_reading(self) -> None:
        pause = self._held or self._write_paused
        if pause is self._reading_paused or not self._connected:
            return
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            return
        self._reading_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # -------------------------------------------------------------- writing

    def _flush(self) -> None:
        if not self._connected:
            self.protocol.data_to_send()
            return
        transport = self.transport
        assert transport is not None
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            # An empty chunk is websockets' SEND_EOF: the end of our stream. The
            # server closes the TCP connection first (RFC 6455 §7.1.1): half-close
            # now; the peer's end of the stream then closes the rest.
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):  # uvloop raises RuntimeError when closing
                    transport.close()
            else:  # TLS has no half-close
                transport.close()

    # ------------------------------------------------------------- closing

    def _fail(self, code: int, reason: str) -> None:
        """_Fail the WebSocket Connection_ (RFC 6455 §7.1.7)."""
        self.protocol.fail(code, reason)
        self._flush()
        self._state_changed()

    def _state_changed(self) -> None:
        """After anything that may have moved the protocol out of OPEN."""
        protocol = self.protocol
        self._open = open_ = protocol.state is OPEN and self._connected
        if not open_ and self._listener is not None and not self._ended:
            self._end()
        if self._close_timer is None and self._connected and protocol.close_expected():
            timeout = self._close_timeout
            if timeout is not None:
                self._close_timer = self._loop.call_later(timeout, self._close_expired)

    def _end(self) -> None:
        self._ended = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        listener = self._listener
        assert listener is not None
        listener.connection_closed()

    def _close_expired(self) -> None:
        # The peer did not complete the closing handshake (or did not take the
        # bytes of our close frame) within close_timeout: drop the connection.
        self._close_timer = None
        self.abort()

    def _open_expired(self) -> None:
        self._open_timer = None
        if self.protocol.state is CONNECTING:
            self.abort()

    def _cancel_open_timer(self) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None

    # ------------------------------------------------------------ keepalive

    def _ping(self) -> None:
        self._ping_timer = None
        if not self._open:
            return
        # RFC 6455 §5.5.2/§5.5.3: the pong echoes the ping's application data, so a
        # random payload tells our pong from an unsolicited one.
        # Any 4 bytes the peer cannot guess by chance will do (no system call).
        data = getrandbits(32).to_bytes(4, "big")
        self._ping_payload = data
        self._ping_sent = self._loop.time()
        if self._debug:
            self.protocol.send_ping(data)
            self._flush()
        else:
            self._flush()  # whatever the protocol has queued goes first
            transport = self.transport
            assert transport is not None
            transport.write(_PING_HEADER + data)
        if self._ping_timeout is not None:
            self._ping_timer = self._loop.call_later(self._ping_timeout, self._ping_expired)
        else:
            assert self._ping_interval is not None
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _pong(self, data: bytes) -> None:
        if self._ping_payload is None or data != self._ping_payload:
            return  # unsolicited: no answer expected (RFC 6455 §5.5.3)
        self._ping_payload = None
        if self._ping_timeout is None:
            return  # the next ping is already scheduled
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        assert self._ping_interval is not None
        latency = self._loop.time() - self._ping_sent
        self._ping_timer = self._loop.call_later(
            max(self._ping_interval - latency, 0.0), self._ping
        )

    def _ping_expired(self) -> None:
        """No pong within ping_timeout: the peer (or the path to it) is dead.

        The connection is failed with 1011 and the charge point is told gone at
        once; the TCP connection is closed as soon as the close frame is written —
        no closing handshake is awaited from a peer that has just shown it answers
        nothing (``close_timeout`` bounds even that write).
        """
        self._ping_timer = None
        if not self._open:
            return
        self._fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
        transport = self.transport
        assert transport is not None
        transport.close()
