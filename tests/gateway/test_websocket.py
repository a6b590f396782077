"""The WebSocket protocol of the gateway, driven byte by byte without a socket.

A fake transport records what the server writes; a client-side sans-I/O protocol of
``websockets`` reads it back as frames. The end-to-end behaviour over real sockets
is in test_server.py and the conformance suite; this pins the framing short cut
(frames split anywhere, several per chunk, fragments, control frames in between),
the protocol errors and the timers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, Close, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN, State
from websockets.uri import parse_uri

from kilowatt.gateway.websocket import WebSocket

KEY = base64.b64encode(b"0123456789abcdef").decode()
UPGRADE = (
    "GET /ocpp/CP1 HTTP/1.1\r\n"
    "Host: 127.0.0.1\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: ocpp1.6\r\n"
    "\r\n"
).encode()


def client_frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    """A frame as a client sends it: masked (RFC 6455 §5.1)."""
    return Frame(opcode, data, fin).serialize(mask=True)


class FakeTransport:
    """Enough of an asyncio transport: records writes, reading state and closing."""

    def __init__(self, protocol: WebSocket, *, tls: bool = False) -> None:
        self.protocol = protocol
        self.written = bytearray()
        self.eof = False
        self.closing = False
        self.aborted = False
        self.reading = True
        self._tls = tls
        self._lost = False

    def write(self, data: bytes) -> None:
        assert not self.eof and not self._lost, "write after the end of the stream"
        self.written += data

    def can_write_eof(self) -> bool:
        return not self._tls

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self.closing = True
        self._lose()

    def _lose(self) -> None:
        if not self._lost:
            self._lost = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


class Listener:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.closed = 0
        self.on_message: Any = None

    def message_received(self, data: str | bytes) -> None:
        self.messages.append(data)
        if self.on_message is not None:
            self.on_message(data)

    def connection_closed(self) -> None:
        self.closed += 1


class Peer:
    """The client side: frames out, frames in (through websockets' client protocol)."""

    def __init__(self, ws: WebSocket, transport: FakeTransport) -> None:
        self.ws = ws
        self.transport = transport
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1/ocpp/CP1"), state=OPEN)

    def text(self, message: str) -> bytes:
        return client_frame(TEXT, message.encode())

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.ws.data_received(chunk)

    def received(self) -> list[Frame]:
        self.client.receive_data(self.transport.take())
        if self.transport.eof:
            self.client.receive_eof()
        return [event for event in self.client.events_received() if isinstance(event, Frame)]


def open_socket(
    *,
    early: bytes = b"",
    listener: Listener | None = None,
    **options: Any,
) -> tuple[WebSocket, FakeTransport, Peer, Listener]:
    requests: list[Request] = []
    options.setdefault("ping_interval", None)
    ws = WebSocket(lambda _ws, request: requests.append(request), **options)
    transport = FakeTransport(ws)
    ws.connection_made(transport)
    ws.data_received(UPGRADE + early)
    assert len(requests) == 1 and requests[0].path == "/ocpp/CP1"
    assert not transport.reading, "reading is held until the gateway is ready"
    assert ws.accept(requests[0], "ocpp1.6", server="Kilowatt")
    head = transport.take()
    assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol: ocpp1.6" in head
    listener = listener or Listener()
    ws.attach(listener)
    assert transport.reading
    return ws, transport, Peer(ws, transport), listener


def split_everywhere(data: bytes) -> Iterator[list[bytes]]:
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def close_of(frame: Frame) -> tuple[int, str]:
    assert frame.opcode is CLOSE
    close = Close.parse(frame.data)
    return close.code, close.reason


# ------------------------------------------------------------------ messages


async def test_messages_of_every_length_class_in_one_chunk() -> None:
    _ws, transport, peer, listener = open_socket()
    short, medium, long = "a" * 125, "é" * 30_000, "z" * 70_000  # 7-, 16- and 64-bit lengths
    peer.send(
        peer.text(short) + peer.text(medium) + client_frame(BINARY, b"\x00\x01") + peer.text(long)
    )
    assert listener.messages == [short, medium, b"\x00\x01", long]
    assert transport.take() == b""


async def test_a_frame_cut_anywhere_is_delivered_once_whole() -> None:
    frames = [
        '[2,"1","Heartbeat",{}]',
        "x" * 300,  # 16-bit length
    ]
    for message in frames:
        data = client_frame(TEXT, message.encode())
        for chunks in split_everywhere(data):
            _, _, peer, listener = open_socket()
            peer.send(*chunks)
            assert listener.messages == [message], chunks
    # Byte by byte, three frames in a row.
    _ws, _, peer, listener = open_socket()
    data = b"".join(peer.text(str(n)) for n in range(3))
    peer.send(*(data[i : i + 1] for i in range(len(data))))
    assert listener.messages == ["0", "1", "2"]


async def test_frames_sent_before_the_upgrade_answer_wait_for_attach() -> None:
    first = client_frame(TEXT, b'[2,"1","Heartbeat",{}]')
    listener = Listener()
    # The first frame and half of the second come with the request.
    second = client_frame(TEXT, b"second")
    _ws, _, peer, _ = open_socket(early=first + second[:3], listener=listener)
    assert listener.messages == ['[2,"1","Heartbeat",{}]']
    peer.send(second[3:])
    assert listener.messages == ['[2,"1","Heartbeat",{}]', "second"]


async def test_fragmented_message_with_a_ping_in_between() -> None:
    data = (
        client_frame(TEXT, b"[2,", fin=False)
        + client_frame(PING, b"pi")
        + client_frame(CONT, '"é",'.encode()[:3], fin=False)
        + client_frame(CONT, '"é",'.encode()[3:] + b"{}]")
        + client_frame(TEXT, b"after")
    )
    for chunks in ([data], *split_everywhere(data)):
        _ws, _, peer, listener = open_socket()
        peer.send(*chunks)
        assert listener.messages == ['[2,"é",{}]', "after"]
        replies = peer.received()
        assert [(f.opcode, f.data) for f in replies] == [(PONG, b"pi")]


async def test_text_frame_inside_a_fragmented_message_fails_the_connection() -> None:
    _ws, transport, peer, listener = open_socket()
    peer.send(client_frame(TEXT, b"part", fin=False) + peer.text("whole") + peer.text("later"))
    assert listener.messages == []
    assert listener.closed == 1
    (close,) = peer.received()
    assert close_of(close)[0] == 1002  # RFC 6455 §5.4
    assert transport.eof


async def test_invalid_utf8_fails_the_connection_with_1007() -> None:
    _ws, _transport, peer, listener = open_socket()
    peer.send(peer.text("fine") + client_frame(TEXT, b"\xff\xfe") + peer.text("never"))
    assert listener.messages == ["fine"]
    assert listener.closed == 1
    (close,) = peer.received()
    assert close_of(close)[0] == 1007
    peer.send(peer.text("still never"))
    assert listener.messages == ["fine"]


async def test_unmasked_frame_fails_with_1002() -> None:
    _ws, _, peer, listener = open_socket()
    peer.send(Frame(TEXT, b"unmasked").serialize(mask=False))
    assert listener.messages == [] and listener.closed == 1
    (close,) = peer.received()
    assert close_of(close)[0] == 1002


async def test_message_beyond_the_size_limit_fails_with_1009_from_its_header() -> None:
    _, _, peer, listener = open_socket(max_size=1000)
    frame = peer.text("y" * 1001)
    peer.send(frame[:20])  # the header says it all: nothing is buffered
    assert listener.closed == 1
    (close,) = peer.received()
    assert close_of(close)[0] == 1009
    _ws, _, peer, listener = open_socket(max_size=1000)
    peer.send(peer.text("y" * 1000))
    assert listener.messages == ["y" * 1000]
    # Fragments count together (websockets keeps the running size).
    peer.send(client_frame(TEXT, b"a" * 600, fin=False) + client_frame(CONT, b"b" * 600))
    assert listener.closed == 1
    (close,) = peer.received()
    assert close_of(close)[0] == 1009


# ------------------------------------------------------------------- writing


async def test_text_frames_of_every_length_class() -> None:
    ws, _, peer, _ = open_socket()
    messages = [b"[3]", b"m" * 126, b"n" * 65_535, b"o" * 65_536]
    for message in messages:
        ws.send_text(message)
    frames = peer.received()
    assert [(f.opcode, f.fin, f.data) for f in frames] == [(TEXT, True, m) for m in messages]


async def test_write_backpressure_pauses_reading() -> None:
    ws, transport, _, _ = open_socket()
    ws.pause_writing()
    assert not transport.reading
    ws.resume_writing()
    assert transport.reading


# ------------------------------------------------------------------- closing


async def test_peer_close_after_messages_in_the_same_chunk() -> None:
    ws, transport, peer, listener = open_socket()
    close = client_frame(CLOSE, Close(1000, "bye").serialize())
    peer.send(peer.text("one") + peer.text("two") + close + peer.text("ignored"))
    assert listener.messages == ["one", "two"]
    assert listener.closed == 1
    (echo,) = peer.received()
    assert close_of(echo) == (1000, "bye")  # RFC 6455 §5.5.1: echoed
    assert transport.eof  # the server closes the TCP connection first (§7.1.1)
    ws.send_text(b"too late")
    assert transport.take() == b""
    ws.eof_received()
    ws.connection_lost(None)
    assert listener.closed == 1
    await ws.wait_closed()


async def test_our_close_is_cut_after_close_timeout() -> None:
    ws, transport, peer, listener = open_socket(close_timeout=0.05)
    closed = ws.close(1001)
    assert listener.closed == 1
    (frame,) = peer.received()
    assert close_of(frame) == (1001, "")
    peer.send(peer.text("after our close"))
    assert listener.messages == []
    async with asyncio.timeout(2):
        await closed
    assert transport.aborted
    assert ws.close_code == 1001


async def test_closing_while_handling_a_message_drops_the_rest_of_the_chunk() -> None:
    listener = Listener()
    ws, _, peer, _ = open_socket(listener=listener)
    listener.on_message = lambda data: ws.close(1008, "too many invalid frames")
    peer.send(peer.text("first") + peer.text("second"))
    assert listener.messages == ["first"]
    assert listener.closed == 1
    (frame,) = peer.received()
    assert close_of(frame) == (1008, "too many invalid frames")


async def test_connection_lost_tells_the_listener_once() -> None:
    ws, transport, _, listener = open_socket()
    transport.abort()
    await asyncio.sleep(0)
    assert listener.closed == 1
    assert ws.state is State.CLOSED and ws.close_code == 1006


# ------------------------------------------------------------------ keepalive


async def next_ping(peer: Peer) -> Frame:
    async with asyncio.timeout(2):
        while not (frames := peer.received()):
            await asyncio.sleep(0.005)
    (ping,) = frames
    return ping


async def test_keepalive_pings_and_accepts_pongs() -> None:
    _ws, transport, peer, listener = open_socket(ping_interval=0.02, ping_timeout=0.5)
    for _ in range(3):
        ping = await next_ping(peer)
        assert ping.opcode is PING and len(ping.data) == 4
        peer.send(client_frame(PONG, b"unsolicited") + client_frame(PONG, ping.data))
    assert listener.closed == 0 and not transport.closing


async def test_keepalive_bypasses_the_sans_io_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    # Thousands of charge points: a ping and its pong cost a few bytes written and
    # read, not the protocol's parser and frame objects.
    # A logger below DEBUG whatever other tests did to the root logger: with debug
    # logging on, every frame goes through the protocol, which logs it.
    quiet = logging.getLogger("tests.websocket.quiet")
    quiet.setLevel(logging.INFO)
    ws, transport, peer, listener = open_socket(ping_interval=0.02, ping_timeout=0.5, logger=quiet)
    fed: list[bytes] = []
    receive_data = ws.protocol.receive_data

    def feed(data: bytes) -> None:
        fed.append(bytes(data))
        receive_data(data)

    monkeypatch.setattr(ws.protocol, "receive_data", feed)
    monkeypatch.setattr(ws.protocol, "send_ping", lambda data: pytest.fail("protocol ping"))
    payloads = set()
    for _ in range(3):
        ping = await next_ping(peer)
        assert ping.opcode is PING and len(ping.data) == 4
        payloads.add(bytes(ping.data))
        pong = client_frame(PONG, ping.data)
        peer.send(pong[:3])  # split anywhere
        peer.send(pong[3:] + peer.text("after the pong"))
    assert fed == []
    assert len(payloads) == 3  # a new payload every time
    assert listener.messages == ["after the pong"] * 3
    assert listener.closed == 0 and not transport.closing


async def test_a_pong_between_fragments_is_taken_and_the_message_assembled() -> None:
    ws, transport, peer, listener = open_socket(ping_interval=0.02, ping_timeout=30)
    ping = await next_ping(peer)
    peer.send(
        client_frame(TEXT, b"[2,", fin=False)
        + client_frame(PONG, ping.data)
        + client_frame(CONT, b'"x",{}]')
    )
    assert listener.messages == ['[2,"x",{}]']
    assert ws._ping_payload is None  # the pong answered the ping
    assert listener.closed == 0 and not transport.closing
    ws.abort()


async def test_keepalive_without_pong_fails_with_1011_and_closes_at_once() -> None:
    ws, transport, peer, listener = open_socket(ping_interval=0.01, ping_timeout=0.02)
    async with asyncio.timeout(2):
        while not listener.closed:
            await asyncio.sleep(0.005)
    frames = peer.received()
    assert [f.opcode for f in frames] == [PING, CLOSE]
    assert close_of(frames[-1]) == (1011, "keepalive ping timeout")
    assert transport.closing  # not waiting for a closing handshake from a dead peer
    await ws.wait_closed()


# ------------------------------------------------------------------ handshake


async def test_refused_upgrade_reads_on_to_see_the_peer_go() -> None:
    requests: list[Request] = []
    ws = WebSocket(lambda _ws, request: requests.append(request), ping_interval=None)
    transport = FakeTransport(ws)
    ws.connection_made(transport)
    ws.data_received(UPGRADE[:10])
    ws.data_received(UPGRADE[10:])
    (_request,) = requests
    ws.reject(ws.respond(401, "Unauthorized\n"))
    assert transport.take().startswith(b"HTTP/1.1 401 ")
    assert transport.eof and transport.reading
    ws.data_received(b"anything")
    ws.eof_received()
    ws.connection_lost(None)
    await ws.wait_closed()


async def test_not_an_upgrade_is_answered_by_websockets() -> None:
    requests: list[Request] = []
    ws = WebSocket(lambda _ws, request: requests.append(request), ping_interval=None)
    transport = FakeTransport(ws)
    ws.connection_made(transport)
    ws.data_received(UPGRADE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))
    (request,) = requests
    assert not ws.accept(request, "ocpp1.6", server="Kilowatt")
    assert transport.take().startswith(b"HTTP/1.1 400 ")  # RFC 6455 §4.2.2


async def test_open_timeout_aborts_a_silent_client() -> None:
    ws = WebSocket(lambda _ws, request: None, open_timeout=0.02, ping_interval=None)
    transport = FakeTransport(ws)
    ws.connection_made(transport)
    ws.data_received(b"GET /ocpp/CP1 HTTP/1.1\r\n")
    async with asyncio.timeout(2):
        await ws.wait_closed()
    assert transport.aborted


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
async def test_request_head_in_small_pieces(size: int) -> None:
    requests: list[Request] = []
    ws = WebSocket(lambda _ws, request: requests.append(request), ping_interval=None)
    transport = FakeTransport(ws)
    ws.connection_made(transport)
    data = UPGRADE + client_frame(TEXT, b"early")
    fed = 0
    while not requests:  # reading is paused from the request on: the rest comes later
        ws.data_received(data[fed : fed + size])
        fed += size
    (request,) = requests
    rest = data[fed:]
    assert ws.accept(request, None, server="Kilowatt")
    listener = Listener()
    ws.attach(listener)
    ws.data_received(rest)
    assert listener.messages == ["early"]
    assert b"Sec-WebSocket-Protocol" not in transport.take()


async def test_with_frame_logging_every_frame_goes_through_websockets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.websocket.debug")
    logger.setLevel(logging.DEBUG)
    _, _, peer, listener = open_socket(logger=logger)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        peer.send(
            peer.text("one")
            + client_frame(TEXT, b"t", fin=False)
            + client_frame(CONT, b"wo")
            + client_frame(TEXT, b"\xff")
        )
    assert listener.messages == ["one", "two"]
    assert listener.closed == 1
    assert any("< TEXT 'one'" in record.getMessage() for record in caplog.records)


async def test_data_handed_over_while_reading_is_held_waits_for_attach() -> None:
    requests: list[Request] = []
    ws = WebSocket(lambda _ws, request: requests.append(request), ping_interval=None)
    transport = FakeTransport(ws)
    ws.connection_made(transport)
    ws.data_received(UPGRADE)
    (request,) = requests
    # A TLS transport may deliver what it had decrypted after pause_reading().
    frame = client_frame(TEXT, b"held")
    ws.data_received(frame[:4])
    ws.data_received(frame[4:] + client_frame(TEXT, b"too"))
    assert ws.accept(request, "ocpp1.6", server="Kilowatt")
    listener = Listener()
    ws.attach(listener)
    assert listener.messages == ["held", "too"]


async def test_connection_lost_before_attach() -> None:
    requests: list[Request] = []
    ws = WebSocket(lambda _ws, request: requests.append(request), ping_interval=None)
    transport = FakeTransport(ws)
    ws.connection_made(transport)
    ws.data_received(UPGRADE + client_frame(TEXT, b"early")[:5])
    (request,) = requests
    assert ws.accept(request, "ocpp1.6", server="Kilowatt")
    ws.connection_lost(None)  # while the gateway records the connection
    listener = Listener()
    ws.attach(listener)
    assert listener.messages == [] and listener.closed == 1
    assert ws.closed


async def test_a_large_frame_trickling_in_costs_linear_time() -> None:
    # 100 KB one byte at a time: re-parsing what is buffered on every byte would copy
    # gigabytes (a cheap way for a peer to burn the server's CPU).
    _, _, peer, listener = open_socket()
    message = "t" * 100_000
    data = peer.text(message)
    started = asyncio.get_running_loop().time()
    peer.send(*(data[i : i + 1] for i in range(len(data))))
    assert listener.messages == [message]
    assert asyncio.get_running_loop().time() - started < 5.0
