"""Composition root: ``create_app(settings)`` wires every part; no module-level state."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass, field

from kilowatt.api.app import create_api
from kilowatt.api.deps import ApiContext
from kilowatt.api.http import AsgiHttpServer
from kilowatt.bus.local import LocalCommandBus
from kilowatt.clock import Clock, SystemClock
from kilowatt.config import Settings
from kilowatt.gateway.auth import ChargePointCredentials, CredentialStore
from kilowatt.gateway.registry import ConnectionRegistry
from kilowatt.gateway.server import Gateway, GatewayConfig
from kilowatt.gateway.tls import build_server_ssl_context
from kilowatt.ocpp16.handlers.core import core_routes
from kilowatt.ocpp16.handlers.notifications import notification_routes
from kilowatt.ocpp16.handlers.registration import require_acceptance
from kilowatt.ocpp16.routes import CENTRAL_TO_CHARGE_POINT, SUBPROTOCOL, protocol_spec
from kilowatt.protocol.router import Router
from kilowatt.services.api_tokens import ApiTokenService
from kilowatt.services.authorization import AuthorizationService
from kilowatt.services.charge_points import BootPolicy, ChargePointService
from kilowatt.services.commands import CommandService
from kilowatt.services.data_transfer import DataTransferRegistry
from kilowatt.services.transactions import TransactionService
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import current_revision, head_revision, upgrade

__all__ = ["Application", "Services", "build_services", "create_app"]

log = logging.getLogger("kilowatt")


class SchemaOutOfDate(RuntimeError):
    """The database schema is older than this version of Kilowatt."""


@dataclass
class Services:
    store: SqlStore
    clock: Clock
    charge_points: ChargePointService
    authorization: AuthorizationService
    transactions: TransactionService
    data_transfer: DataTransferRegistry
    tokens: ApiTokenService


def build_services(settings: Settings, *, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    store = open_store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    data_transfer = DataTransferRegistry()
    data_transfer.load_entry_points()
    return Services(
        store=store,
        clock=clock,
        charge_points=ChargePointService(
            store,
            clock,
            boot_policy=BootPolicy(settings.boot_policy),
            heartbeat_interval=settings.heartbeat_interval,
            boot_retry_interval=settings.boot_retry_interval,
        ),
        authorization=AuthorizationService(store, clock),
        transactions=TransactionService(store, clock),
        data_transfer=data_transfer,
        tokens=ApiTokenService(store, clock),
    )


async def prepare_database(services: Services, *, migrate: bool) -> None:
    """Create/upgrade the schema (embedded default) or check it is current."""
    store = services.store
    if migrate:
        await upgrade(store)
        return
    current = await current_revision(store)
    if current != head_revision():
        raise SchemaOutOfDate(
            f"the database schema is at revision {current or 'none'}, this Kilowatt needs "
            f"{head_revision()}: run `kilowatt db upgrade` with the same database URL"
        )


class _StoredCredentials:
    """The gateway's credential lookup, answered from the charge point records."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def get_credentials(self, charge_point_id: str) -> ChargePointCredentials | None:
        point = await self._services.store.read(
            lambda repos: repos.charge_points.get(charge_point_id)
        )
        if point is None:
            return None
        return ChargePointCredentials(point.security_profile, point.password_hash)


@dataclass
class Application:
    settings: Settings
    services: Services
    router: Router
    registry: ConnectionRegistry
    gateway: Gateway
    commands: CommandService
    http: AsgiHttpServer | None = None
    _api_listener: asyncio.Server | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopped: bool = False

    async def start(self) -> None:
        settings = self.settings
        await prepare_database(self.services, migrate=self.services.store.dialect == "sqlite")
        await self.services.charge_points.reset_connection_state()
        await self.gateway.start()
        if self.http is not None and settings.api_port is not None:
            self._api_listener = await asyncio.get_running_loop().create_server(
                self.http.protocol_factory, settings.host, settings.api_port
            )
        self._tasks.append(asyncio.get_running_loop().create_task(self._flush_seen()))
        scheme = "wss" if settings.tls_enabled else "ws"
        log.info(
            "listening",
            extra={
                "url": f"{scheme}://{settings.host}:{self.gateway.port}{settings.ocpp_path}",
                "security_profile": settings.security_profile,
                "database": self.services.store.url.render_as_string(hide_password=True),
                "boot_policy": settings.boot_policy,
            },
        )
        if settings.security_profile == 0 and not _is_loopback(settings.host):
            log.warning(
                "SECURITY WARNING: serving a network with no charge point authentication "
                "(security_profile 0): any client can connect as any charge point id. "
                "Set security_profile 1-3 (KILOWATT_SECURITY_PROFILE) for production.",
                extra={"host": settings.host},
            )

    async def _flush_seen(self) -> None:
        while True:
            await asyncio.sleep(self.settings.seen_flush_interval)
            try:
                await self.services.charge_points.flush_seen()
            except Exception:
                log.exception("could not write last-seen times; will retry")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._api_listener is not None:
            self._api_listener.close()
        await self.gateway.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.services.charge_points.flush_seen()
        await self.services.store.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_router(services: Services, settings: Settings) -> Router:
    charge_points = services.charge_points
    routes = core_routes(
        clock=services.clock,
        charge_points=charge_points,
        authorization=services.authorization,
        transactions=services.transactions,
        data_transfer=services.data_transfer,
    )
    routes.update(notification_routes())
    return Router(
        require_acceptance(routes, is_accepted=charge_points.is_accepted, seen=charge_points.seen)
    )


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    credentials: CredentialStore | None = None,
) -> Application:
    services = build_services(settings, clock=clock)
    router = build_router(services, settings)
    registry = ConnectionRegistry()
    spec = protocol_spec()
    commands = CommandService(
        services.store,
        LocalCommandBus(registry),
        spec.validator,
        frozenset(CENTRAL_TO_CHARGE_POINT),
        default_timeout=settings.call_timeout,
    )
    http = _api_server(settings, services, commands) if settings.api_enabled else None
    certificates = [
        (str(cert), str(key))
        for cert, key in (
            (settings.tls_cert_file, settings.tls_key_file),
            (settings.tls_ec_cert_file, settings.tls_ec_key_file),
        )
        if cert is not None and key is not None
    ]
    client_ca = settings.tls_client_ca_file
    ssl_context = (
        build_server_ssl_context(
            certificates,
            client_ca_file=str(client_ca) if client_ca else None,
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
        spec,
        router,
        credentials if credentials is not None else _StoredCredentials(services),
        registry,
        hooks=services.charge_points,
        http=http if settings.api_port is None else None,
    )
    return Application(
        settings=settings,
        services=services,
        router=router,
        registry=registry,
        gateway=gateway,
        commands=commands,
        http=http,
    )


def _api_server(settings: Settings, services: Services, commands: CommandService) -> AsgiHttpServer:
    context = ApiContext(
        settings=settings,
        store=services.store,
        charge_points=services.charge_points,
        authorization=services.authorization,
        transactions=services.transactions,
        commands=commands,
        tokens=services.tokens,
        extras={},
    )
    return AsgiHttpServer(create_api(context), log_level=settings.log_level)
