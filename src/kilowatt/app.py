"""Composition root: ``create_app(settings)`` wires every part; no module-level state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from kilowatt.api.app import create_api
from kilowatt.api.deps import ApiContext
from kilowatt.api.http import AsgiHttpServer
from kilowatt.api.routes.metrics import metrics_router
from kilowatt.bus.base import CommandBus
from kilowatt.bus.events import EventBus, LocalEventBus
from kilowatt.bus.local import LocalCommandBus
from kilowatt.clock import Clock, SystemClock
from kilowatt.config import Settings
from kilowatt.gateway.auth import ChargePointCredentials, CredentialStore
from kilowatt.gateway.connection import combine_observers
from kilowatt.gateway.registry import ConnectionRegistry
from kilowatt.gateway.server import Gateway, GatewayConfig
from kilowatt.gateway.tls import build_server_ssl_context
from kilowatt.message_log_process import ShippedMessageLog
from kilowatt.metrics import Metrics
from kilowatt.ocpp16.handlers.core import core_routes
from kilowatt.ocpp16.handlers.notifications import notification_routes
from kilowatt.ocpp16.handlers.registration import require_acceptance
from kilowatt.ocpp16.routes import CENTRAL_TO_CHARGE_POINT, SUBPROTOCOL, protocol_spec
from kilowatt.process import open_file_limit, raise_open_file_limit
from kilowatt.protocol.router import Router
from kilowatt.services.api_tokens import ApiTokenService
from kilowatt.services.authorization import AuthorizationService
from kilowatt.services.charge_points import BootPolicy, ChargePointService
from kilowatt.services.commands import CommandService
from kilowatt.services.configuration import ConfigurationService
from kilowatt.services.data_transfer import DataTransferRegistry
from kilowatt.services.events import EventService, SecurityEventService
from kilowatt.services.message_log import MessageLog
from kilowatt.services.transactions import TransactionService
from kilowatt.services.webhooks import WebhookDispatcher
from kilowatt.store.sql.database import SqlStore, normalize_url, open_store
from kilowatt.store.sql.message_log import SqlMessageLog
from kilowatt.store.sql.migrate import current_revision, head_revision, upgrade
from kilowatt.tracing import TracedCommandBus, load_tracer, traced_routes

if TYPE_CHECKING:  # imported when used: a single process never loads the Redis client
    from kilowatt.cluster.node import ClusterNode

__all__ = [
    "Application",
    "Services",
    "build_services",
    "create_app",
    "freeze_heap",
    "prepare_store",
    "raise_file_limit",
    "tune_interpreter",
]

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
    configuration: ConfigurationService
    # Events, webhooks and the message log (None: disabled); see _build_events.
    events: EventService | None = None
    webhooks: WebhookDispatcher | None = None
    message_log: MessageLog | None = None
    # The message log's database when it is not ``store`` (closed with it).
    message_log_store: SqlStore | None = None


def build_services(settings: Settings, *, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    store = open_store(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        commit_delay=settings.sqlite_commit_delay,
        concurrent_groups=settings.database_concurrent_groups,
    )
    events, webhooks = _build_events(settings, clock)
    message_log, message_log_store = _build_message_log(settings, store, clock)
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
            events=events,
        ),
        authorization=AuthorizationService(store, clock),
        transactions=TransactionService(store, clock, events=events),
        data_transfer=data_transfer,
        tokens=ApiTokenService(store, clock),
        configuration=ConfigurationService(
            store,
            clock,
            sync_on_boot=settings.configuration_sync_on_boot,
            apply_on_boot=settings.configuration_apply_on_boot,
        ),
        events=events,
        webhooks=webhooks,
        message_log=message_log,
        message_log_store=message_log_store,
    )


async def prepare_database(services: Services, *, migrate: bool) -> None:
    """Create/upgrade the schema (embedded default) or check it is current."""
    await prepare_store(services.store, migrate=migrate)


async def prepare_store(store: SqlStore, *, migrate: bool) -> None:
    """:func:`prepare_database` on a store alone (a supervisor serves nothing)."""
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
    # The operator API itself (what ``http`` serves), for in-process ASGI clients.
    api: FastAPI | None = None
    # Prometheus metrics of this process (GET /metrics on the API's server).
    metrics: Metrics | None = None
    # The cluster node (redis_url set): presence, cross-node calls and events.
    cluster: ClusterNode | None = None
    _api_listener: asyncio.Server | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopped: bool = False

    async def start(self) -> None:
        settings = self.settings
        await prepare_database(self.services, migrate=self.services.store.dialect == "sqlite")
        if self.cluster is None:
            await self.services.charge_points.reset_connection_state()
        else:  # never reset in a cluster: other nodes hold connections (kilowatt.cluster)
            await self.cluster.start()
        try:
            await _start_events(self.services)
        except BaseException:
            # Nothing serves yet: release what was opened (threads, connections).
            await _stop_events(self.services, grace=0)
            await self.services.store.close()
            raise
        await self.gateway.start()
        if self.http is not None and settings.api_port is not None:
            self._api_listener = await asyncio.get_running_loop().create_server(
                self.http.protocol_factory,
                settings.host,
                settings.api_port,
                reuse_port=settings.workers > 1 or None,
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
                "node": self.cluster.node_id if self.cluster is not None else "single",
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
        events = self.services.events
        if events is not None:
            # Ends the event streams, which the API's shutdown would otherwise wait for.
            await events.bus.close()
        await self.services.configuration.close()  # no CALL of its own while closing
        await self.gateway.stop()
        if self.cluster is not None:  # after the gateway: its disconnections released claims
            await self.cluster.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # After the gateway: the disconnections are posted, the last frames written.
        await _stop_events(self.services, grace=self.settings.shutdown_timeout)
        await self.services.charge_points.flush_seen()
        await self.services.store.close()


def freeze_heap() -> None:
    """Keep the garbage collector off the objects a started server lives with.

    Every message leaves short-lived garbage behind, which every few thousand messages
    sets off a full collection; a full collection traverses every tracked object — the
    ~150,000 of the modules, schemas and database engine, tens of milliseconds each
    time. Frozen (after collecting what is garbage already), they are skipped.

    For the serving process, once its application has started; not in tests, which
    start and stop many applications in one process (frozen, those would stay).
    """
    gc.collect()
    gc.freeze()


# Below this many open files, a serving process says how few charge points it can hold.
LOW_FILE_LIMIT = 4096


# Open files a serving process keeps for other than charge points (database, Redis,
# API clients, log files) when max_charge_points is automatic.
RESERVED_FILES = 512


def max_connections(settings: Settings) -> int | None:
    """The gateway's connection limit: ``max_charge_points``, or what the open-file
    limit leaves once RESERVED_FILES are kept; None when nothing limits it."""
    if settings.max_charge_points:
        return settings.max_charge_points
    limit = open_file_limit()
    return None if limit is None else max(1, limit - RESERVED_FILES)


def raise_file_limit() -> int | None:
    """Before serving: the open-file limit raised to the hard limit (one file per
    connected charge point), and a warning when it stays low. Returns it."""
    limit = raise_open_file_limit()
    if limit is not None and limit < LOW_FILE_LIMIT:
        log.warning(
            "open file limit is low: about this many charge points can connect at most; "
            "raise it (ulimit -n, or LimitNOFILE= in a systemd unit)",
            extra={"limit": limit, "charge_points": max(1, limit - RESERVED_FILES)},
        )
    else:
        log.debug("open file limit", extra={"limit": limit})
    return limit


# How often a serving process thaws what it froze and collects it all once.
THAW_INTERVAL = 3600.0


def tune_interpreter(settings: Settings) -> None:
    """Settings of the interpreter for a serving process, once its application has
    started: the heap frozen, the garbage collector kept off long-lived objects, and
    the GIL switch interval.

    The switch interval is how long one thread may keep the GIL while another waits
    for it: the event loop against the SQLite writer thread (commits, the message
    log's inserts, which let go of the GIL at every statement step and need it back)
    and the other way round. With Python's 5 ms, one message-log insert could hold
    the loop back that long (a 200 ms maximum latency measured at 100 charge points
    against 65 ms with 0.5 ms).

    Full collections: with thousands of charge points connected, every full
    collection traverses hundreds of thousands of objects that live as long as
    their connections (about 180 ms each at 10,000 charge points, many times a
    minute). So whatever survives a full collection is frozen too, and the next one
    only looks at what is newer (about 20 ms). Once an hour everything is thawed and
    collected once, so that cycles among objects frozen while alive (the records of
    charge points gone since) are freed.
    """
    sys.setswitchinterval(settings.gil_switch_interval)
    freeze_heap()
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not serving (a test): no thawing
        return
    loop.call_later(THAW_INTERVAL, _thaw, loop)


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def _thaw(loop: asyncio.AbstractEventLoop) -> None:
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()  # and _freeze_survivors freezes what is left
    log.debug(
        "heap thawed and collected",
        extra={"seconds": round(time.perf_counter() - started, 3), "frozen": gc.get_freeze_count()},
    )
    loop.call_later(THAW_INTERVAL, _thaw, loop)


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
    routes.update(
        notification_routes(security_events=SecurityEventService(services.events, services.clock))
    )
    # Configuration after an Accepted boot, and its desired HeartbeatInterval as interval.
    routes["BootNotification"] = services.configuration.boot_handler(routes["BootNotification"])
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
    metrics = Metrics(actions=spec.known, connections=registry, store=services.store)
    if services.message_log is not None:
        metrics.attach_message_log(services.message_log)
    cluster = _cluster(settings, services, registry)
    bus: CommandBus = LocalCommandBus(registry) if cluster is None else cluster.commands
    if settings.tracing:  # wrapped here, so that tracing off costs nothing per message
        tracer = load_tracer()
        router = Router(traced_routes(router, tracer))
        bus = TracedCommandBus(bus, tracer)
    commands = CommandService(
        services.store,
        bus,
        spec.validator,
        frozenset(CENTRAL_TO_CHARGE_POINT),
        default_timeout=settings.call_timeout,
    )
    services.configuration.attach(commands, answered=_answered(registry))
    api = _api(settings, services, commands, metrics) if settings.api_enabled else None
    http = AsgiHttpServer(api, log_level=settings.log_level) if api is not None else None
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
            close_timeout=settings.close_timeout,
            max_message_size=settings.max_message_size,
            bad_frame_limit=settings.bad_frame_limit,
            strict_outgoing=settings.strict_outgoing,
            shutdown_timeout=settings.shutdown_timeout,
            reuse_port=settings.workers > 1,
            max_connections=max_connections(settings),
        ),
        spec,
        router,
        credentials if credentials is not None else _StoredCredentials(services),
        registry,
        hooks=services.charge_points if cluster is None else cluster.hooks(services.charge_points),
        observer=combine_observers(services.message_log),
        http=http if settings.api_port is None else None,
        metrics=metrics,
    )
    return Application(
        settings=settings,
        services=services,
        router=router,
        registry=registry,
        gateway=gateway,
        commands=commands,
        http=http,
        api=api,
        metrics=metrics,
        cluster=cluster,
    )


def _api(
    settings: Settings, services: Services, commands: CommandService, metrics: Metrics
) -> FastAPI:
    context = ApiContext(
        settings=settings,
        store=services.store,
        charge_points=services.charge_points,
        authorization=services.authorization,
        transactions=services.transactions,
        commands=commands,
        tokens=services.tokens,
        extras={"routers": [metrics_router(metrics)]},
        events=services.events.bus if services.events is not None else None,
        message_log=services.message_log,
        configuration=services.configuration,
    )
    return create_api(context)


def _answered(registry: ConnectionRegistry) -> Callable[[str], Awaitable[None]]:
    """``answered(charge_point_id)``: returns once the CALLs the charge point sent so
    far are answered on the wire (its connection's worker is idle)."""

    async def answered(charge_point_id: str) -> None:
        connection = registry.get(charge_point_id)
        if connection is not None:
            await connection.wait_idle()

    return answered


# ----------------------------------------------------- events, webhooks, message log


def _build_events(
    settings: Settings, clock: Clock
) -> tuple[EventService, WebhookDispatcher | None]:
    bus = _event_bus(settings)
    webhooks = None
    if settings.webhook_urls:
        secret = settings.webhook_secret
        webhooks = WebhookDispatcher(
            [str(url) for url in settings.webhook_urls],
            secret=secret.get_secret_value() if secret is not None else None,
            queue_size=settings.webhook_queue_size,
            max_attempts=settings.webhook_max_attempts,
            backoff_initial=settings.webhook_backoff_initial,
            backoff_max=settings.webhook_backoff_max,
            timeout=settings.webhook_timeout,
        )
    return EventService(bus, clock, [webhooks] if webhooks is not None else []), webhooks


def _build_message_log(
    settings: Settings, store: SqlStore, clock: Clock
) -> tuple[MessageLog | None, SqlStore | None]:
    """The message log, and the store of its own database if it has one."""
    if not settings.message_log_enabled:
        return None, None
    url = normalize_url(settings.message_log_url)
    own = url != store.url
    log_store = SqlStore(url, sqlite_synchronous=settings.sqlite_synchronous) if own else store
    options: dict[str, Any] = {
        "max_payload": settings.message_log_max_payload,
        "buffer_size": settings.message_log_buffer_size,
        "retention_days": settings.message_log_retention_days,
    }
    # Not in the main SQLite file: the child would starve for its write lock
    # (kilowatt.message_log_process).
    if settings.message_log_process and (own or log_store.dialect != "sqlite"):
        config = {
            "url": url.render_as_string(hide_password=False),
            "database": url.render_as_string(hide_password=True),  # for its log lines
            "sqlite_synchronous": settings.sqlite_synchronous,
            "flush_interval": settings.message_log_flush_interval,
            "log_level": settings.log_level,
            "log_format": settings.log_format,
            **options,
        }
        message_log: MessageLog = ShippedMessageLog(
            SqlMessageLog(log_store), clock, config=config, **options
        )
    else:
        message_log = MessageLog(
            SqlMessageLog(log_store),
            clock,
            flush_interval=settings.message_log_flush_interval,
            **options,
        )
    return message_log, log_store if own else None


async def _start_events(services: Services) -> None:
    if services.webhooks is not None:
        await services.webhooks.start()
    if services.message_log is not None:
        await services.message_log.start()


async def _stop_events(services: Services, *, grace: float) -> None:
    if services.webhooks is not None:
        await services.webhooks.close(grace=grace)
    if services.message_log is not None:
        await services.message_log.close()
    if services.message_log_store is not None:
        await services.message_log_store.close()


# ------------------------------------------------------------------------- cluster


def _event_bus(settings: Settings) -> EventBus:
    if settings.redis_url is None:
        return LocalEventBus(queue_size=settings.events_queue_size)
    from kilowatt.bus.redis_events import RedisEventBus

    return RedisEventBus(settings.redis_url, queue_size=settings.events_queue_size)


def _cluster(
    settings: Settings, services: Services, registry: ConnectionRegistry
) -> ClusterNode | None:
    """This process's cluster node when ``redis_url`` is set; None: a single process."""
    if settings.redis_url is None:
        return None
    from kilowatt.bus.redis_events import RedisEventBus
    from kilowatt.cluster.node import ClusterNode, default_node_id

    events = services.events.bus if services.events is not None else None
    return ClusterNode(
        redis_url=settings.redis_url,
        node_id=settings.node_id or default_node_id(),
        presence_ttl=settings.presence_ttl,
        call_timeout=settings.call_timeout,
        registry=registry,
        store=services.store,
        clock=services.clock,
        events=events if isinstance(events, RedisEventBus) else None,
        address=f"{settings.host}:{settings.port}",
    )
