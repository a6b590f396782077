"""The WebSocket endpoint: upgrade checks, one connection per charge point, shutdown.

``ws[s]://HOST:PORT/<prefix>/<chargePointId>`` (OCPP-J 1.6 §3.1.1). The upgrade is
refused before any OCPP traffic when the path, the subprotocol or the credentials
are wrong (400/404/401); everything after the upgrade is the connection's business.

Each connection is a :class:`kilowatt.gateway.websocket.WebSocket` (our asyncio
protocol around websockets' sans-I/O one); one task per connection runs the upgrade
checks, then waits for the connection's end to do the bookkeeping.
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

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

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
from kilowatt.gateway.websocket import WebSocket
from kilowatt.protocol.router import Handler
from kilowatt.protocol.session import ProtocolSpec, Session

__all__ = ["ConnectionHooks", "Gateway", "GatewayConfig", "HttpServer"]

log = logging.getLogger("kilowatt.gateway")
ws_log = logging.getLogger("websockets.server")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
SERVER_HEADER = "Kilowatt"


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
    # Open WebSocket connections at most; further upgrades get 503 (None: no limit).
    max_connections: int | None = None


# What a refused upgrade is told about when to come back (503: shutting down, full).
RETRY_AFTER_S = 30
# At most one warning per this many seconds while connections are refused for the limit.
LIMIT_WARNING_INTERVAL = 10.0


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


def _remote(ws: WebSocket) -> str:
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
        # A plain dict: looked up twice per incoming CALL (session, then handler).
        self._routes = dict(routes)
        self._credentials = credentials
        self.registry = registry
        self._hooks = hooks
        self._observer = observer
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()
        # One task per connection whose upgrade request arrived (see _serve).
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections past the upgrade, until their TCP connection is closed.
        self._sockets: set[WebSocket] = set()
        # Every OCPP connection (gone from here with its last reference).
        self._all: weakref.WeakSet[WebSocket] = weakref.WeakSet()
        self._http = http
        self._listener: asyncio.Server | None = None
        self._closing = False
        self._refused_for_limit = 0
        self._limit_warned_at = -LIMIT_WARNING_INTERVAL

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        http = self._http
        http_factory = http.protocol_factory if http is not None else NotFoundProtocol
        prefix = config.path_prefix

        def front() -> FrontProtocol:
            return FrontProtocol(self._ocpp_protocol, http_factory, prefix)

        extra: dict[str, Any] = {}
        if config.ssl_context is not None:
            extra["ssl_handshake_timeout"] = config.open_timeout
        self._listener = await loop.create_server(
            front,
            config.host,
            config.port,
            ssl=config.ssl_context,
            reuse_port=config.reuse_port or None,
            backlog=2048,
            **extra,
        )

    def _ocpp_protocol(self) -> WebSocket:
        config = self.config
        ws = WebSocket(
            self._request_received,
            max_size=config.max_message_size,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            open_timeout=config.open_timeout,
            close_timeout=config.close_timeout,
            logger=ws_log,
        )
        self._all.add(ws)
        return ws

    def _request_received(self, ws: WebSocket, request: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(ws, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, ws: WebSocket, request: Request) -> None:
        """The life of one WebSocket connection: upgrade checks, then :meth:`_handle`."""
        try:
            async with asyncio.timeout(self.config.open_timeout):
                accepted = await self._process_request(ws, request)
        except Exception:
            # A handshake that timed out or failed: never leak the socket.
            ws.abort()
            return
        if accepted is not None and ws.accept(request, accepted.subprotocol, server=SERVER_HEADER):
            self._sockets.add(ws)
            try:
                await self._handle(ws, accepted)
            except Exception:
                log.exception("connection handler failed")
                ws.close(CLOSE_INTERNAL_ERROR, "internal error")
            finally:
                self._sockets.discard(ws)
        # Refused, or open and now closing: either way the TCP connection ends within
        # close_timeout, and stop() waits for this task.
        await ws.wait_closed()

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._listener is not None, "start() first"
        for sock in self._listener.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the server has no listening socket")

    async def stop(self) -> None:
        """Stop accepting, let in-flight handlers finish, close sockets with 1001."""
        if self._listener is None:
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
        # Every remaining connection is closed with 1001, going away (RFC 6455 §7.4.1);
        # upgrades still being checked are refused with 503 (see _process_request).
        for ws in list(self._sockets):
            ws.close(CLOSE_GOING_AWAY)
        # Each connection's task ends once its bookkeeping (disconnected) is done and
        # its TCP connection closed; those of upgrades still being checked, after 503.
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        # What is left never completed an upgrade request: nothing to wait for.
        for ws in list(self._all):
            if not ws.closed:
                ws.abort()
        self._listener = None

    # ------------------------------------------------------------ upgrade

    async def _process_request(self, ws: WebSocket, request: Request) -> _Accepted | None:
        """Check the upgrade request: what to accept, or None once a refusal is sent."""
        config = self.config
        charge_point_id = "-"
        limit = config.max_connections
        if limit is not None and len(self._sockets) >= limit:
            self._refuse_for_limit(ws, limit)
            return None
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
            if self._closing:
                raise HandshakeRejected(503, "server is shutting down")
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
            elif status is HTTPStatus.SERVICE_UNAVAILABLE:
                response.headers["Retry-After"] = str(RETRY_AFTER_S)
            self._send_refusal(ws, response)
            return None
        except Exception:
            log.exception("upgrade checks failed", extra={"charge_point": charge_point_id})
            response = ws.respond(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "Failed to open a WebSocket connection.\nSee server log for more information.\n",
            )
            self._send_refusal(ws, response)
            return None
        return _Accepted(charge_point_id, subprotocol, profile)

    def _refuse_for_limit(self, ws: WebSocket, limit: int) -> None:
        """503 with Retry-After: this process holds all the charge points it may.

        Better than accepting one more: past the open-file limit, the database, Redis
        and the API would fail for the charge points already connected too. Logged
        once per LIMIT_WARNING_INTERVAL with the number refused, not per refusal.
        """
        self._refused_for_limit += 1
        now = asyncio.get_running_loop().time()
        if now - self._limit_warned_at >= LIMIT_WARNING_INTERVAL:
            self._limit_warned_at = now
            log.warning(
                "connection limit reached: refusing new charge points (503); raise the "
                "open-file limit or max_charge_points, or add a node",
                extra={"limit": limit, "refused_total": self._refused_for_limit},
            )
        response = ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        self._send_refusal(ws, response)

    @staticmethod
    def _send_refusal(ws: WebSocket, response: Response) -> None:
        response.headers["Server"] = SERVER_HEADER
        ws.reject(response)

    async def _authenticate(self, ws: WebSocket, headers: Headers, charge_point_id: str) -> int:
        ssl_object = ws.get_extra_info("ssl_object")
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

    # --------------------------------------------------------- connection

    async def _handle(self, ws: WebSocket, accepted: _Accepted) -> None:
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
            ws,
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
        # From here on the WebSocket pushes messages into the connection.
        ws.attach(connection)
        try:
            await connection.run()
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
