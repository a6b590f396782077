"""The WebSocket endpoint: upgrade checks, one connection per charge point, shutdown.

``ws[s]://HOST:PORT/<prefix>/<chargePointId>`` (OCPP-J 1.6 §3.1.1). The upgrade is
refused before any OCPP traffic when the path, the subprotocol or the credentials
are wrong (400/404/401); everything after the upgrade is the connection's business.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from kilowatt.gateway.auth import (
    CredentialStore,
    HandshakeRejected,
    authenticate,
    charge_point_id_from_path,
    parse_subprotocol_header,
    peer_common_name,
    select_subprotocol,
)
from kilowatt.gateway.connection import (
    ChargePointConnection,
    ConnectionMetrics,
    ConnectionObserver,
)
from kilowatt.gateway.front import FrontProtocol, NotFoundProtocol
from kilowatt.gateway.registry import ConnectionRegistry
from kilowatt.protocol.router import Handler
from kilowatt.protocol.session import ProtocolSpec, Session

__all__ = ["ConnectionHooks", "Gateway", "GatewayConfig", "HttpServer", "TransportClosed"]

log = logging.getLogger("kilowatt.gateway")
ws_log = logging.getLogger("websockets.server")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    path_prefix: str = "/ocpp/"
    subprotocols: tuple[str, ...] = ("ocpp1.6",)
    allow_missing_subprotocol: bool = True
    default_security_profile: int = 0
    ssl_context: ssl.SSLContext | None = None
    call_timeout: float = 30.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_message_size: int = 1_048_576
    bad_frame_limit: int = 20
    strict_outgoing: bool = False
    shutdown_timeout: float = 10.0
    open_timeout: float = 10.0
    close_timeout: float = 10.0
    reuse_port: bool = False


@dataclass(frozen=True, slots=True)
class _Accepted:
    charge_point_id: str
    subprotocol: str | None
    security_profile: int


class ConnectionHooks(Protocol):
    """Told about connections coming and going (connection state, events, metrics)."""

    async def connected(
        self, charge_point_id: str, *, remote_address: str, security_profile: int
    ) -> None: ...

    async def disconnected(self, charge_point_id: str) -> None: ...


class HttpServer(Protocol):
    """The HTTP side of the port (the operator API): connections handed over by the front."""

    def protocol_factory(self) -> asyncio.Protocol: ...

    async def shutdown(self) -> None: ...


class TransportClosed(Exception):
    """The WebSocket closed."""


class _WebSocketTransport:
    """Adapts a websockets connection to :class:`kilowatt.gateway.connection.Transport`."""

    __slots__ = ("_ws",)

    def __init__(self, ws: ServerConnection) -> None:
        self._ws = ws

    async def recv(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def send_text(self, frame: bytes) -> None:
        await self._ws.send(frame, text=True)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def _remote(ws: ServerConnection) -> str:
    address: Any = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class Gateway:
    """Accepts charge point connections and keeps them in the registry."""

    def __init__(
        self,
        config: GatewayConfig,
        spec: ProtocolSpec,
        routes: Mapping[str, Handler],
        credentials: CredentialStore,
        registry: ConnectionRegistry,
        *,
        hooks: ConnectionHooks | None = None,
        observer: ConnectionObserver | None = None,
        http: HttpServer | None = None,
        metrics: ConnectionMetrics | None = None,
    ) -> None:
        self.config = config
        self._spec = spec
        self._routes = routes
        self._credentials = credentials
        self.registry = registry
        self._hooks = hooks
        self._observer = observer
        self._metrics = metrics
        # Keyed weakly: an upgrade that fails after our checks leaves nothing behind.
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, _Accepted] = (
            weakref.WeakKeyDictionary()
        )
        self._background: set[asyncio.Task[None]] = set()
        self._http = http
        self._server: Server | None = None
        self._listener: asyncio.Server | None = None
        self._closing = False

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        # The websockets server object keeps the WebSocket connections and their
        # handler tasks; the listening socket is ours, shared with the HTTP side.
        listener: asyncio.Server | None = None

        async def adopt_listener() -> asyncio.Server:
            assert listener is not None
            return listener

        self._server = Server(adopt_listener, self._protocol_handler, logger=ws_log)
        http = self._http
        http_factory = http.protocol_factory if http is not None else NotFoundProtocol
        prefix = config.path_prefix

        def front() -> FrontProtocol:
            return FrontProtocol(self._ocpp_protocol, http_factory, prefix)

        extra: dict[str, Any] = {}
        if config.ssl_context is not None:
            extra["ssl_handshake_timeout"] = config.open_timeout
        listener = self._listener = await loop.create_server(
            front,
            config.host,
            config.port,
            ssl=config.ssl_context,
            reuse_port=config.reuse_port or None,
            backlog=2048,
            **extra,
        )
        await self._server  # adopts the listener

    def _ocpp_protocol(self) -> ServerConnection:
        config = self.config
        assert self._server is not None

        def select(protocol: ServerProtocol, offered: Any) -> Subprotocol | None:
            return self._select_subprotocol(connection, offered)

        protocol = ServerProtocol(
            select_subprotocol=select,
            max_size=config.max_message_size,
            logger=ws_log,
        )
        connection = ServerConnection(
            protocol,
            self._server,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            close_timeout=config.close_timeout,
        )
        return connection

    async def _protocol_handler(self, connection: ServerConnection) -> None:
        """The life of one WebSocket connection: handshake, then :meth:`_handle`."""
        server = self._server
        assert server is not None
        try:
            async with asyncio.timeout(self.config.open_timeout):
                await connection.handshake(self._process_request, None, "Kilowatt")
            if connection.protocol.state is not State.OPEN:
                connection.transport.abort()
                return
            server.all_connections.add(connection)
            connection.start_keepalive()
            try:
                async with connection:
                    await self._handle(connection)
            except Exception:
                log.exception("connection handler failed")
            finally:
                server.all_connections.discard(connection)
        except Exception:
            # A handshake that timed out or failed: never leak the socket.
            connection.transport.abort()
        finally:
            task = asyncio.current_task()
            if task is not None:
                server.handler_tasks.discard(task)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._listener is not None, "start() first"
        for sock in self._listener.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the server has no listening socket")

    async def stop(self) -> None:
        """Stop accepting, let in-flight handlers finish, close sockets with 1001."""
        if self._server is None or self._listener is None:
            return
        self._closing = True
        self._listener.close()
        connections = list(self.registry)
        if connections:
            waits = [asyncio.ensure_future(c.wait_idle()) for c in connections]
            _, late = await asyncio.wait(waits, timeout=self.config.shutdown_timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "shutdown: handlers still running were abandoned", extra={"count": len(late)}
                )
        if self._http is not None:
            await self._http.shutdown()
        # websockets closes every remaining connection with 1001 (going away).
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None
        self._listener = None

    # ------------------------------------------------------------ upgrade

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        config = self.config
        charge_point_id = "-"
        try:
            if self._closing:
                raise HandshakeRejected(503, "server is shutting down")
            charge_point_id = charge_point_id_from_path(request.path, config.path_prefix)
            offered = parse_subprotocol_header(request.headers.get_all("Sec-WebSocket-Protocol"))
            subprotocol = select_subprotocol(
                offered, config.subprotocols, allow_missing=config.allow_missing_subprotocol
            )
            if subprotocol is None:
                log.info(
                    "no subprotocol offered; accepted as ocpp1.6",
                    extra={"charge_point": charge_point_id},
                )
            profile = await self._authenticate(ws, request.headers, charge_point_id)
        except HandshakeRejected as rejection:
            log.warning(
                "connection refused",
                extra={
                    "charge_point": charge_point_id,
                    "status": rejection.status,
                    "reason": rejection.reason,
                    "remote": _remote(ws),
                },
            )
            status = HTTPStatus(rejection.status)
            response = ws.respond(status, f"{status.phrase}\n")
            if status is HTTPStatus.UNAUTHORIZED:
                response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
            return response
        self._accepted[ws] = _Accepted(charge_point_id, subprotocol, profile)
        return None

    async def _authenticate(
        self, ws: ServerConnection, headers: Headers, charge_point_id: str
    ) -> int:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        credentials = await self._credentials.get_credentials(charge_point_id)
        authorization = headers.get("Authorization")
        arguments: dict[str, Any] = {
            "authorization": authorization,
            "tls": ssl_object is not None,
            "peer_common_name": peer_common_name(ssl_object),
            "credentials": credentials,
            "default_profile": self.config.default_security_profile,
        }
        if authorization is None:
            return authenticate(charge_point_id, **arguments)
        # Password hashing is deliberately slow: keep it off the event loop.
        return await asyncio.to_thread(authenticate, charge_point_id, **arguments)

    def _select_subprotocol(self, ws: ServerConnection, subprotocols: Any) -> Subprotocol | None:
        accepted = self._accepted.get(ws)
        if accepted is None or accepted.subprotocol is None:
            return None
        return Subprotocol(accepted.subprotocol)

    # --------------------------------------------------------- connection

    async def _handle(self, ws: ServerConnection) -> None:
        accepted = self._accepted.pop(ws, None)
        if accepted is None:  # pragma: no cover - websockets calls us only after the upgrade
            await ws.close(1011, "internal error")
            return
        config = self.config
        charge_point_id = accepted.charge_point_id
        session = Session(
            self._spec,
            handled=self._routes,
            call_timeout=config.call_timeout,
            bad_frame_limit=config.bad_frame_limit,
        )
        connection = ChargePointConnection(
            charge_point_id,
            _WebSocketTransport(ws),
            session,
            self._routes,
            strict=config.strict_outgoing,
            observer=self._observer,
            metrics=self._metrics,
        )
        remote = _remote(ws)
        if self._hooks is not None:
            # Recorded before the connection is visible, so whoever sees it connected
            # (the API, a test) also finds its state in the database.
            await self._hooks.connected(
                charge_point_id, remote_address=remote, security_profile=accepted.security_profile
            )
        previous = self.registry.register(connection)
        if previous is not None:
            log.info(
                "replacing the previous connection",
                extra={"charge_point": charge_point_id, "remote": remote},
            )
            # In the background: a half-open old socket must not delay the new one.
            task = asyncio.get_running_loop().create_task(
                previous.close(CLOSE_NORMAL, "replaced by a new connection")
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        log.info(
            "connected",
            extra={
                "charge_point": charge_point_id,
                "remote": remote,
                "subprotocol": accepted.subprotocol,
                "security_profile": accepted.security_profile,
            },
        )
        try:
            await connection.run()
        except TransportClosed:
            pass
        finally:
            current = self.registry.unregister(connection)
            log.info(
                "disconnected",
                extra={
                    "charge_point": charge_point_id,
                    "code": ws.close_code,
                    "reason": ws.close_reason or "",
                },
            )
            if current and self._hooks is not None:
                await self._hooks.disconnected(charge_point_id)
