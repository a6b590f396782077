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

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
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
from kilowatt.gateway.connection import ChargePointConnection, ConnectionObserver
from kilowatt.gateway.registry import ConnectionRegistry
from kilowatt.protocol.router import Handler
from kilowatt.protocol.session import ProtocolSpec, Session

__all__ = ["ConnectionHooks", "Gateway", "GatewayConfig", "TransportClosed"]

log = logging.getLogger("kilowatt.gateway")

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
    ) -> None:
        self.config = config
        self._spec = spec
        self._routes = routes
        self._credentials = credentials
        self.registry = registry
        self._hooks = hooks
        self._observer = observer
        # Keyed weakly: an upgrade that fails after our checks leaves nothing behind.
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, _Accepted] = (
            weakref.WeakKeyDictionary()
        )
        self._background: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._closing = False

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        config = self.config
        self._server = await serve(
            self._handle,
            config.host,
            config.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            ssl=config.ssl_context,
            compression=None,
            ping_interval=config.ping_interval or None,
            ping_timeout=config.ping_timeout,
            max_size=config.max_message_size,
            server_header="Kilowatt",
        )

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._server is not None, "start() first"
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the server has no listening socket")

    async def stop(self) -> None:
        """Stop accepting, let in-flight handlers finish, close sockets with 1001."""
        if self._server is None:
            return
        self._closing = True
        # Stop accepting only (websockets' own close() acts once, and closes sockets).
        self._server.server.close()
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
        # websockets closes every remaining connection with 1001 (going away).
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

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
