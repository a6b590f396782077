"""Composition root: ``create_app(settings)`` wires every part; no module-level state."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from kilowatt.clock import Clock, SystemClock
from kilowatt.config import Settings
from kilowatt.gateway.auth import CredentialStore, InMemoryCredentialStore
from kilowatt.gateway.registry import ConnectionRegistry
from kilowatt.gateway.server import Gateway, GatewayConfig
from kilowatt.gateway.tls import build_server_ssl_context
from kilowatt.ocpp16.handlers.core import core_routes
from kilowatt.ocpp16.handlers.notifications import notification_routes
from kilowatt.ocpp16.routes import SUBPROTOCOL, protocol_spec
from kilowatt.protocol.router import Router

__all__ = ["Application", "create_app"]

log = logging.getLogger("kilowatt")


@dataclass
class Application:
    settings: Settings
    router: Router
    registry: ConnectionRegistry
    gateway: Gateway

    async def start(self) -> None:
        await self.gateway.start()
        settings = self.settings
        scheme = "wss" if settings.tls_enabled else "ws"
        log.info(
            "listening",
            extra={
                "url": f"{scheme}://{settings.host}:{self.gateway.port}{settings.ocpp_path}",
                "security_profile": settings.security_profile,
            },
        )
        if settings.security_profile == 0 and not _is_loopback(settings.host):
            log.warning(
                "SECURITY WARNING: serving a network with no charge point authentication "
                "(security_profile 0): any client can connect as any charge point id. "
                "Set security_profile 1-3 (KILOWATT_SECURITY_PROFILE) for production.",
                extra={"host": settings.host},
            )

    async def stop(self) -> None:
        await self.gateway.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_router(settings: Settings, clock: Clock) -> Router:
    router = Router()
    router.include(core_routes(heartbeat_interval=settings.heartbeat_interval, clock=clock))
    router.include(notification_routes())
    return router


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    credentials: CredentialStore | None = None,
) -> Application:
    clock = clock or SystemClock()
    router = build_router(settings, clock)
    registry = ConnectionRegistry()
    certificates = [
        (str(cert), str(key))
        for cert, key in (
            (settings.tls_cert_file, settings.tls_key_file),
            (settings.tls_ec_cert_file, settings.tls_ec_key_file),
        )
        if cert is not None and key is not None
    ]
    ssl_context = (
        build_server_ssl_context(
            certificates,
            client_ca_file=str(settings.tls_client_ca_file)
            if settings.tls_client_ca_file
            else None,
            require_client_certificate=settings.security_profile == 3,
        )
        if certificates
        else None
    )
    gateway = Gateway(
        GatewayConfig(
            host=settings.host,
            port=settings.port,
            path_prefix=settings.ocpp_path,
            subprotocols=(SUBPROTOCOL,),
            allow_missing_subprotocol=settings.allow_missing_subprotocol,
            default_security_profile=settings.security_profile,
            ssl_context=ssl_context,
            call_timeout=settings.call_timeout,
            ping_interval=settings.ping_interval or None,
            ping_timeout=settings.ping_timeout,
            max_message_size=settings.max_message_size,
            bad_frame_limit=settings.bad_frame_limit,
            strict_outgoing=settings.strict_outgoing,
            shutdown_timeout=settings.shutdown_timeout,
        ),
        protocol_spec(),
        router,
        credentials if credentials is not None else InMemoryCredentialStore(),
        registry,
    )
    return Application(settings=settings, router=router, registry=registry, gateway=gateway)
