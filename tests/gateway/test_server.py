"""End-to-end tests of the OCPP WebSocket endpoint over real sockets on 127.0.0.1.

The charge point side is the independent ``ocpp`` package (``ocpp.v16.ChargePoint``)
where ordinary OCPP traffic is enough, and a raw ``websockets`` client where the
exact frames, handshake responses or close codes matter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, ChargePointErrorCode, ChargePointStatus
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from kilowatt.app import Application, create_app
from kilowatt.bus.local import LocalCommandBus
from kilowatt.config import load_settings
from kilowatt.gateway.auth import InMemoryCredentialStore
from kilowatt.gateway.connection import ChargePointConnection
from kilowatt.protocol.errors import CallTimeout, NotConnected
from tests.app_runner import StartApp, app_starter
from tests.pki import PkiFiles, client_ssl_context

# Upper bound of every single wait in this file.
TIMEOUT = 5.0
OCPP16 = "ocpp1.6"
PASSWORD = "correct-horse-battery-staple-16"
WWW_AUTHENTICATE = 'Basic realm="OCPP", charset="UTF-8"'

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[StartApp]:
    """Start apps on free ports (``load_settings`` overrides as keywords); stop them all."""

    def settings(n: int) -> dict[str, Any]:
        return {
            "shutdown_timeout": 2.0,
            "database_url": f"sqlite:///{tmp_path}/kilowatt-{n}.db",
            "boot_policy": "accept-all",
            # Raw clients that assert on exact frames: no GetConfiguration after boot.
            "configuration_sync_on_boot": False,
        }

    async with app_starter(settings, stop_timeout=TIMEOUT) as start:
        yield start


def url_of(app: Application, charge_point_id: str = "CP1", *, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{app.gateway.port}{app.settings.ocpp_path}{charge_point_id}"


def basic(charge_point_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{charge_point_id}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until it holds (bounded by TIMEOUT)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out after {TIMEOUT} s waiting for: {what}")


async def bounded(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    async with asyncio.timeout(timeout):
        return await awaitable


async def refused_status(url: str, **kwargs: Any) -> InvalidStatus:
    """Connect, expect the upgrade to be refused, return the refusal."""
    with pytest.raises(InvalidStatus) as info:
        async with asyncio.timeout(TIMEOUT), connect(url, open_timeout=TIMEOUT, **kwargs):
            pass
    return info.value


class Wire:
    """The connection object given to ``ocpp``'s ChargePoint; logs every frame.

    ``frames`` holds ``("in" | "out", decoded frame)`` in the order the client
    saw them; an outgoing frame is logged just before it is written.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[str, list[Any]]] = []

    async def recv(self) -> str | bytes:
        message = await self.ws.recv()
        self.frames.append(("in", json.loads(message)))
        return message

    async def send(self, message: str) -> None:
        self.frames.append(("out", json.loads(message)))
        await self.ws.send(message)


async def accept(payload: dict[str, Any]) -> str:
    return "Accepted"


class ChargePoint(OcppChargePoint):  # type: ignore[misc]
    """``ocpp.v16.ChargePoint`` that routes each received message in its own task.

    The stock ``start()`` awaits every handler inside its read loop, so a slow
    handler would stop the client from reading and would hide how the Central
    System schedules its CALLs. Reset is answered by ``reset_answer``.
    """

    def __init__(self, charge_point_id: str, wire: Wire) -> None:
        super().__init__(charge_point_id, wire, response_timeout=TIMEOUT)
        self.wire = wire
        self.resets: list[dict[str, Any]] = []
        self.reset_answer: Callable[[dict[str, Any]], Awaitable[str]] = accept

    async def start(self) -> None:
        routing: set[asyncio.Task[Any]] = set()
        try:
            while True:
                message = await self._connection.recv()
                task = asyncio.create_task(self.route_message(message))
                routing.add(task)
                task.add_done_callback(routing.discard)
        finally:
            for task in routing:
                task.cancel()
            if routing:
                await asyncio.wait(routing)

    @on(Action.reset)
    async def on_reset(self, **payload: Any) -> call_result.Reset:
        self.resets.append(payload)
        return call_result.Reset(status=await self.reset_answer(payload))


@contextlib.asynccontextmanager
async def registered_ws(
    app: Application, charge_point_id: str = "CP1", *, boot: bool = True, **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    """A raw websockets client, yielded once the server has registered it."""
    previous = app.registry.get(charge_point_id)
    kwargs.setdefault("subprotocols", [OCPP16])
    url = kwargs.pop("url", None) or url_of(app, charge_point_id)
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(url, open_timeout=TIMEOUT, ping_interval=None, **kwargs)
    try:
        await eventually(
            lambda: app.registry.get(charge_point_id) not in (None, previous),
            f"{charge_point_id!r} to be registered",
        )
        if boot:
            # Only an accepted charge point is served beyond BootNotification.
            await ws.send(
                '[2,"boot-0","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
            )
            async with asyncio.timeout(TIMEOUT):
                answer = json.loads(await ws.recv())
            assert answer[:2] == [3, "boot-0"] and answer[2]["status"] == "Accepted", answer
        yield ws
    finally:
        async with asyncio.timeout(TIMEOUT):
            await ws.close()


@contextlib.asynccontextmanager
async def charge_point(
    app: Application, charge_point_id: str = "CP1", **kwargs: Any
) -> AsyncIterator[ChargePoint]:
    """An ``ocpp`` charge point, connected, registered and reading."""
    async with registered_ws(app, charge_point_id, **kwargs) as ws:
        cp = ChargePoint(charge_point_id, Wire(ws))
        reader = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def bus(app: Application) -> LocalCommandBus:
    """CALLs to the charge points connected to ``app``, as the command service sends them."""
    return LocalCommandBus(app.registry)


def live(app: Application, charge_point_id: str) -> ChargePointConnection:
    connection = app.registry.get(charge_point_id)
    assert connection is not None, f"{charge_point_id!r} is not registered"
    return connection


def assert_recent_utc(timestamp: str) -> None:
    assert timestamp.endswith("Z"), timestamp
    moment = datetime.datetime.fromisoformat(timestamp)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - moment).total_seconds()) < 60, timestamp


# ---------------------------------------------------------- charge point -> central


async def test_boot_heartbeat_and_status_notification(start_app: StartApp) -> None:
    app = await start_app(heartbeat_interval=123)
    async with charge_point(app) as cp:
        boot = await bounded(
            cp.call(
                call.BootNotification(charge_point_model="KW-1", charge_point_vendor="Acme"),
                suppress=False,
            )
        )
        assert boot.status == "Accepted"
        assert boot.interval == app.settings.heartbeat_interval == 123
        assert_recent_utc(boot.current_time)

        heartbeat = await bounded(cp.call(call.Heartbeat(), suppress=False))
        assert_recent_utc(heartbeat.current_time)

        status = await bounded(
            cp.call(
                call.StatusNotification(
                    connector_id=1,
                    error_code=ChargePointErrorCode.no_error,
                    status=ChargePointStatus.available,
                ),
                suppress=False,
            )
        )
        assert status == call_result.StatusNotification()
        direction, frame = cp.wire.frames[-1]
        assert direction == "in"
        assert frame[0] == 3 and frame[2] == {}, frame


# ---------------------------------------------------------- central -> charge point


async def test_call_reaches_the_charge_point_and_returns_its_answer(
    start_app: StartApp,
) -> None:
    app = await start_app()
    async with charge_point(app) as cp:
        result = await bounded(bus(app).call("CP1", "Reset", {"type": "Soft"}))
        assert result == {"status": "Accepted"}
        assert cp.resets == [{"type": "Soft"}]
        calls = [frame for direction, frame in cp.wire.frames if direction == "in"]
        assert len(calls) == 1
        kind, unique_id, action, payload = calls[0]
        assert (kind, action, payload) == (2, "Reset", {"type": "Soft"})
        assert ("out", [3, unique_id, {"status": "Accepted"}]) in cp.wire.frames


async def test_call_timeout_then_next_call_works(start_app: StartApp) -> None:
    app = await start_app(call_timeout=0.5)
    async with charge_point(app) as cp:
        release_first = asyncio.Event()
        second_arrived = asyncio.Event()
        late_answer_sent = asyncio.Event()

        async def answer(payload: dict[str, Any]) -> str:
            if payload["type"] == "Soft":
                await release_first.wait()
                return "Rejected"  # too late: the Central System gave up already
            second_arrived.set()
            await late_answer_sent.wait()
            return "Accepted"

        cp.reset_answer = answer
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(CallTimeout):
            await bounded(bus(app).call("CP1", "Reset", {"type": "Soft"}))
        elapsed = loop.time() - started
        assert 0.45 <= elapsed < 1.5, f"CallTimeout after {elapsed:.3f} s, expected ~0.5 s"

        second = asyncio.create_task(
            bus(app).call("CP1", "Reset", {"type": "Hard"}, timeout=TIMEOUT)
        )
        await bounded(second_arrived.wait())
        # The late answer to the first call goes out while the second is outstanding;
        # it must not be taken for the answer to the second.
        release_first.set()
        await eventually(
            lambda: any(
                direction == "out" and frame[0] == 3 and frame[2] == {"status": "Rejected"}
                for direction, frame in cp.wire.frames
            ),
            "the late answer to be sent",
        )
        await asyncio.sleep(0.05)
        late_answer_sent.set()
        assert await bounded(second) == {"status": "Accepted"}
        assert cp.resets == [{"type": "Soft"}, {"type": "Hard"}]


async def test_concurrent_calls_to_one_charge_point_are_serialized(
    start_app: StartApp,
) -> None:
    app = await start_app()
    async with charge_point(app) as cp:
        running = 0
        most_running = 0

        async def slow(payload: dict[str, Any]) -> str:
            nonlocal running, most_running
            running += 1
            most_running = max(most_running, running)
            await asyncio.sleep(0.2)
            running -= 1
            return "Accepted" if payload["type"] == "Soft" else "Rejected"

        cp.reset_answer = slow
        soft, hard = await bounded(
            asyncio.gather(
                bus(app).call("CP1", "Reset", {"type": "Soft"}),
                bus(app).call("CP1", "Reset", {"type": "Hard"}),
            )
        )
        assert soft == {"status": "Accepted"}
        assert hard == {"status": "Rejected"}
        assert most_running == 1, "the charge point had two of our CALLs outstanding at once"
        sequence = [(direction, frame[0], frame[-1]) for direction, frame in cp.wire.frames]
        assert sequence == [
            ("in", 2, {"type": "Soft"}),
            ("out", 3, {"status": "Accepted"}),
            ("in", 2, {"type": "Hard"}),
            ("out", 3, {"status": "Rejected"}),
        ], "the second CALL must be sent only after the first was answered"


async def test_charge_point_call_answered_while_our_call_is_outstanding(
    start_app: StartApp,
) -> None:
    app = await start_app()
    async with charge_point(app) as cp:
        entered = asyncio.Event()
        release = asyncio.Event()

        async def hold(payload: dict[str, Any]) -> str:
            entered.set()
            await release.wait()
            return "Accepted"

        cp.reset_answer = hold
        pending = asyncio.create_task(bus(app).call("CP1", "Reset", {"type": "Soft"}))
        try:
            await bounded(entered.wait())
            heartbeat = await bounded(cp.call(call.Heartbeat(), suppress=False))
            assert_recent_utc(heartbeat.current_time)
            assert not pending.done(), "our CALL ended before the charge point answered it"
            release.set()
            assert await bounded(pending) == {"status": "Accepted"}
        finally:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


# ------------------------------------------------------------------- connections


async def test_reconnect_replaces_the_old_connection(start_app: StartApp) -> None:
    app = await start_app()
    async with charge_point(app, "CP1") as first:
        old = live(app, "CP1")
        async with charge_point(app, "CP1") as second:
            new = live(app, "CP1")
            assert new is not old
            await bounded(first.wire.ws.wait_closed())
            assert first.wire.ws.close_code == 1000
            assert first.wire.ws.close_reason == "replaced by a new connection"
            # The old connection's clean-up must not unregister the new one.
            await bounded(old.closed.wait())
            assert app.registry.get("CP1") is new

            result = await bounded(bus(app).call("CP1", "Reset", {"type": "Hard"}))
            assert result == {"status": "Accepted"}
            assert second.resets == [{"type": "Hard"}]
            assert first.resets == []


async def test_disconnect_fails_pending_calls_at_once(start_app: StartApp) -> None:
    app = await start_app(call_timeout=30)
    async with charge_point(app) as cp:
        entered = asyncio.Event()

        async def never(payload: dict[str, Any]) -> str:
            entered.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        cp.reset_answer = never
        connection = live(app, "CP1")
        pending = asyncio.create_task(bus(app).call("CP1", "Reset", {"type": "Soft"}))
        await bounded(entered.wait())
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bounded(cp.wire.ws.close())
        with pytest.raises(NotConnected):
            await bounded(pending)
        assert loop.time() - started < 5.0
        await bounded(connection.closed.wait())
        assert app.registry.get("CP1") is None
        with pytest.raises(NotConnected):
            await bounded(bus(app).call("CP1", "Reset", {"type": "Soft"}))


# ---------------------------------------------------------------------- handshake


async def test_subprotocol_negotiation(start_app: StartApp) -> None:
    app = await start_app()
    url = url_of(app)
    async with registered_ws(app, subprotocols=["ocpp0.1", OCPP16]) as ws:
        assert ws.subprotocol == OCPP16
        assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == [OCPP16]

    refusal = await refused_status(url, subprotocols=["ocpp2.0.1"])
    assert refusal.response.status_code == 400

    # No subprotocol offered: accepted by default, without one in the response.
    async with registered_ws(app, subprotocols=None) as ws:
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers

    strict = await start_app(allow_missing_subprotocol=False)
    refusal = await refused_status(url_of(strict))
    assert refusal.response.status_code == 400
    assert app.registry.get("CP1") is None
    assert strict.registry.get("CP1") is None


async def test_path_rules(start_app: StartApp) -> None:
    app = await start_app()
    base = f"ws://127.0.0.1:{app.gateway.port}"
    refusal = await refused_status(f"{base}/ocpp/", subprotocols=[OCPP16])
    assert refusal.response.status_code == 400
    refusal = await refused_status(f"{base}/foo/CP1", subprotocols=[OCPP16])
    assert refusal.response.status_code == 404
    assert len(app.registry) == 0

    async with registered_ws(app, "CP 1", url=f"{base}/ocpp/CP%201") as ws:
        assert live(app, "CP 1").charge_point_id == "CP 1"
        await ws.send('[2,"hb-1","Heartbeat",{}]')
        answer = json.loads(await bounded(ws.recv()))
        assert answer[:2] == [3, "hb-1"]


async def test_basic_auth(start_app: StartApp) -> None:
    credentials = InMemoryCredentialStore()
    credentials.set("CP1", password=PASSWORD)
    credentials.set("CP2", password="another-password-for-cp2")
    app = await start_app(security_profile=1, credentials=credentials)
    url = url_of(app, "CP1")

    async with registered_ws(app, "CP1", additional_headers=basic("CP1", PASSWORD)):
        assert live(app, "CP1").charge_point_id == "CP1"

    for headers in (
        basic("CP1", "wrong-password-wrong-password"),  # wrong password
        basic("CP2", "another-password-for-cp2"),  # another charge point's credentials
        {},  # no Authorization header
    ):
        refusal = await refused_status(url, subprotocols=[OCPP16], additional_headers=headers)
        assert refusal.response.status_code == 401, headers
        assert refusal.response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE

    refusal = await refused_status(
        url_of(app, "CP9"), subprotocols=[OCPP16], additional_headers=basic("CP9", PASSWORD)
    )
    assert refusal.response.status_code == 401  # unknown charge point
    assert refusal.response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert len(app.registry) == 0


async def test_tls_with_basic_auth(start_app: StartApp, pki: PkiFiles) -> None:
    credentials = InMemoryCredentialStore()
    credentials.set("CP1", password=PASSWORD)
    app = await start_app(
        security_profile=2,
        tls_cert_file=pki.server_rsa.cert_path,
        tls_key_file=pki.server_rsa.key_path,
        credentials=credentials,
    )
    wss = url_of(app, "CP1", scheme="wss")
    context = client_ssl_context(pki)

    async with registered_ws(
        app, "CP1", url=wss, ssl=context, additional_headers=basic("CP1", PASSWORD)
    ) as ws:
        await ws.send('[2,"hb-1","Heartbeat",{}]')
        assert json.loads(await bounded(ws.recv()))[:2] == [3, "hb-1"]

    refusal = await refused_status(wss, ssl=context, subprotocols=[OCPP16])
    assert refusal.response.status_code == 401  # TLS alone is not enough for profile 2

    with pytest.raises((InvalidMessage, ConnectionError, EOFError)):
        async with (
            asyncio.timeout(TIMEOUT),
            connect(
                url_of(app, "CP1"),
                subprotocols=[OCPP16],
                additional_headers=basic("CP1", PASSWORD),
                open_timeout=TIMEOUT,
            ),
        ):
            pass
    assert len(app.registry) == 0


async def test_mutual_tls(start_app: StartApp, pki: PkiFiles) -> None:
    own_id = pki.charge_point_id
    credentials = InMemoryCredentialStore()
    credentials.set(own_id)
    credentials.set("CP-OTHER")
    app = await start_app(
        security_profile=3,
        tls_cert_file=pki.server_rsa.cert_path,
        tls_key_file=pki.server_rsa.key_path,
        tls_client_ca_file=pki.ca.cert_path,
        credentials=credentials,
    )
    with_certificate = client_ssl_context(pki, certificate=pki.client)

    async with registered_ws(
        app, own_id, url=url_of(app, own_id, scheme="wss"), ssl=with_certificate
    ) as ws:
        await ws.send('[2,"hb-1","Heartbeat",{}]')
        assert json.loads(await bounded(ws.recv()))[:2] == [3, "hb-1"]

    # A valid certificate, but its commonName is another charge point's id.
    refusal = await refused_status(
        url_of(app, "CP-OTHER", scheme="wss"), ssl=with_certificate, subprotocols=[OCPP16]
    )
    assert refusal.response.status_code == 401

    # No client certificate: the TLS handshake itself fails (with TLS 1.3 the
    # client learns it on its first read, i.e. while waiting for the HTTP answer).
    with pytest.raises((ssl.SSLError, InvalidMessage, ConnectionError, EOFError)):
        async with (
            asyncio.timeout(TIMEOUT),
            connect(
                url_of(app, own_id, scheme="wss"),
                ssl=client_ssl_context(pki),
                subprotocols=[OCPP16],
                open_timeout=TIMEOUT,
            ),
        ):
            pass
    assert len(app.registry) == 0


# ---------------------------------------------------------------------- bad input


async def test_bad_frames_are_answered_or_dropped(start_app: StartApp) -> None:
    app = await start_app()
    async with charge_point(app, "CP2") as neighbour, registered_ws(app, "BAD") as ws:
        broken: list[str | bytes] = [
            "this is not JSON",
            "[]",
            "[2]",
            '[2, 5, "Heartbeat", {}]',  # UniqueId is not a string: nobody to answer
            '[5, "x"]',  # unknown MessageTypeId: ignored (OCPP-J 1.6 §4.1.3)
            b"\x00\x01binary",
            '[3, "unknown-id", {}]',  # answer to a CALL we never sent
            '[2,"a","Heartbeat",[]]',
            '[2,"b","NoSuchAction",{}]',
            '[2,"c","Reset",{"type":"Soft"}]',  # an action only we send
            '[2,"d","BootNotification",{}]',
            '[2,"e","Heartbeat",{"extra":1}]',
            '[2,"hb","Heartbeat",{}]',
        ]
        for frame in broken:
            await ws.send(frame)
        answers: list[list[Any]] = []
        async with asyncio.timeout(TIMEOUT):
            while not answers or answers[-1][1] != "hb":
                answers.append(json.loads(await ws.recv()))
        assert [answer[:3] for answer in answers[:-1]] == [
            [4, "a", "FormationViolation"],
            [4, "b", "NotImplemented"],
            [4, "c", "NotSupported"],
            [4, "d", "ProtocolError"],
            [4, "e", "FormationViolation"],
        ]
        for answer in answers[:-1]:
            assert len(answer) == 5 and isinstance(answer[3], str)
            assert isinstance(answer[4], dict)
        assert answers[-1][0] == 3
        assert_recent_utc(answers[-1][2]["currentTime"])
        assert app.registry.get("BAD") is not None

        # The charge point connected at the same time did not notice.
        heartbeat = await bounded(neighbour.call(call.Heartbeat(), suppress=False))
        assert_recent_utc(heartbeat.current_time)
        assert await bounded(bus(app).call("CP2", "Reset", {"type": "Soft"})) == {
            "status": "Accepted"
        }


async def test_flood_of_bad_frames_closes_only_that_connection(start_app: StartApp) -> None:
    app = await start_app(bad_frame_limit=3)
    async with charge_point(app, "CP2") as neighbour, registered_ws(app, "FLOOD") as ws:
        for _ in range(3):  # exactly the limit: still tolerated
            await ws.send("garbage")
        await ws.send('[2,"hb","Heartbeat",{}]')
        assert json.loads(await bounded(ws.recv()))[:2] == [3, "hb"]

        await ws.send("garbage")  # one more than the limit
        with pytest.raises(ConnectionClosed):
            await bounded(ws.recv())
        assert ws.close_code == 1008
        assert ws.close_reason == "too many invalid frames"
        await eventually(lambda: app.registry.get("FLOOD") is None, "FLOOD to be unregistered")

        assert app.registry.get("CP2") is not None
        heartbeat = await bounded(neighbour.call(call.Heartbeat(), suppress=False))
        assert_recent_utc(heartbeat.current_time)


# ----------------------------------------------------------------------- shutdown


async def test_graceful_shutdown_closes_clients_with_going_away(start_app: StartApp) -> None:
    app = await start_app()
    async with registered_ws(app, "CP1") as ws:
        started = time.monotonic()
        try:
            async with asyncio.timeout(3.0):
                await app.stop()
        except TimeoutError:
            pytest.fail(
                "BUG: app.stop() hangs while a charge point stays connected. "
                "Gateway.stop() calls websockets Server.close(close_connections=False) "
                "and later close(close_connections=True), but Server.close() is "
                "idempotent, so the second call does nothing and no connection is closed"
            )
        assert time.monotonic() - started < 3.0
        await bounded(ws.wait_closed())
        assert ws.close_code == 1001


async def test_shutdown_cuts_connections_that_never_sent_an_upgrade(
    start_app: StartApp,
) -> None:
    app = await start_app()  # the gateway allows 10 s for an upgrade
    port = app.gateway.port
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ocpp/CP1 HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        await writer.drain()
    await eventually(lambda: len(app.gateway._all) == 1, "the OCPP side to have the connection")
    try:
        async with asyncio.timeout(3.0):
            await app.stop()
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""
    finally:
        writer.close()


# ------------------------------------------------------------------------ uvloop


def test_call_timeout_fires_on_uvloop(tmp_path: Path) -> None:
    """``kilowatt serve`` runs on uvloop, whose timers may fire up to half a
    millisecond before the ``loop.time()`` they were scheduled for (the delay is
    rounded to whole milliseconds). Each call below must still time out."""
    uvloop = pytest.importorskip("uvloop")
    attempts = 10

    async def scenario() -> list[str]:
        # Not a whole number of milliseconds: uvloop rounds the delay to 50 ms.
        app = create_app(
            load_settings(
                port=0,
                ping_interval=0,
                strict_outgoing=True,
                call_timeout=0.0504,
                database_url=f"sqlite:///{tmp_path}/kilowatt.db",
                boot_policy="accept-all",
                configuration_sync_on_boot=False,
            )
        )
        await app.start()
        outcomes: list[str] = []
        try:
            async with registered_ws(app, "CP1"):  # never answers
                for _ in range(attempts):
                    try:
                        async with asyncio.timeout(1.0):
                            await bus(app).call("CP1", "Reset", {"type": "Soft"})
                    except CallTimeout:
                        outcomes.append("CallTimeout")
                    except TimeoutError:
                        # The stuck call still holds the one outstanding-CALL slot.
                        outcomes.append("no CallTimeout after 1 s")
                        break
                    else:
                        outcomes.append("answered")
        finally:
            async with asyncio.timeout(TIMEOUT):
                await app.stop()
        return outcomes

    outcomes = uvloop.run(scenario())
    assert outcomes == ["CallTimeout"] * attempts, (
        "BUG: on uvloop a CALL with call_timeout=0.0504 may never time out "
        f"(outcomes: {outcomes}). The timer fires before the deadline by loop.time(); "
        "ChargePointConnection._expire() then gets None from Session.expire() and "
        "never re-arms the timer, so the call waits forever"
    )


# ------------------------------------------------------------ connection limit


async def test_past_the_connection_limit_upgrades_get_503_with_retry_after(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_app(max_charge_points=2)
    first = await connect(url_of(app, "CP1"), subprotocols=["ocpp1.6"], open_timeout=TIMEOUT)
    second = await connect(url_of(app, "CP2"), subprotocols=["ocpp1.6"], open_timeout=TIMEOUT)
    try:
        for _ in range(3):
            refusal = await refused_status(url_of(app, "CP3"), subprotocols=["ocpp1.6"])
            assert refusal.response.status_code == 503
            assert refusal.response.headers["Retry-After"] == "30"
        # Said once for the burst, not once per refusal.
        assert caplog.text.count("connection limit reached") == 1
        # The charge points already connected are served as before.
        await first.send(
            '[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
        )
        answer = json.loads(await bounded(first.recv()))
        assert answer[0] == 3
    finally:
        await first.close()
    # Once CP1's connection is over (its bookkeeping done), there is room again.
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                third = await connect(
                    url_of(app, "CP3"), subprotocols=["ocpp1.6"], open_timeout=TIMEOUT
                )
            except InvalidStatus as refused:
                assert refused.response.status_code == 503
                await asyncio.sleep(0.05)
            else:
                break
    await third.close()
    await second.close()


def test_the_automatic_limit_keeps_files_for_the_database_redis_and_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kilowatt import app as app_module

    monkeypatch.setattr(app_module, "open_file_limit", lambda: 20_000)
    assert app_module.max_connections(load_settings()) == 20_000 - app_module.RESERVED_FILES
    assert app_module.max_connections(load_settings(max_charge_points=7)) == 7
    monkeypatch.setattr(app_module, "open_file_limit", lambda: None)
    assert app_module.max_connections(load_settings()) is None
