"""Settings: defaults < TOML file (``--config``) < ``KILOWATT_*`` environment < flags.

Every setting is validated at start; a bad value stops the program with a message
that names the setting and says what is expected.
"""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePath
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to change."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KILOWATT_", extra="forbid", frozen=True)

    # Network
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(9000, ge=0, le=65535, description="Port of the OCPP WebSocket endpoint.")
    ocpp_path: str = Field("/ocpp/", description="URL path prefix; the charge point id follows.")

    # Storage
    database_url: str = Field(
        "sqlite:///kilowatt.db",
        description="sqlite:///FILE (embedded default, in the working directory) or "
        "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE.",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="FULL: every commit survives a power cut; NORMAL: survives a crash of "
        "the process only, faster.",
    )
    sqlite_commit_delay: float = Field(
        0.002,
        ge=0,
        le=0.1,
        description="Seconds a write that finds the SQLite writer busy waits for others to "
        "share its commit (one fsync for many charge points); an isolated write commits at "
        "once. 0 commits every group as soon as the writer is free.",
    )
    database_concurrent_groups: int = Field(
        1,
        ge=1,
        le=8,
        description="PostgreSQL: group commits in flight at once, each on a connection of "
        "its own. 1: one at a time, the shortest latency tail; 2: about a quarter more "
        "throughput with 100 charge points and a longer tail (docs/performance.md). Units "
        "of two groups may wait for each other's row locks; a deadlock fails one group, "
        "whose units are retried one by one. SQLite (one writer): ignored.",
    )

    # Cluster (several processes and machines sharing one database and one Redis)
    redis_url: str | None = Field(
        None,
        description="redis://[:PASSWORD@]HOST:PORT/DB (or rediss://, unix://) shared by every "
        "node of a cluster; unset: a single process, nothing leaves it.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Worker processes sharing the port on this machine (SO_REUSEPORT); more "
        "than 1 needs redis_url.",
    )
    node_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Name of this process in the cluster (logs, presence keys); unset: "
        "HOST-PID-RANDOM. With workers, each worker appends -1, -2 …",
    )
    presence_ttl: float = Field(
        10.0,
        ge=1.0,
        le=3600.0,
        description="Seconds a node's claim on a charge point outlives the node (renewed every "
        "ttl/3): how soon another node takes over the charge points of a node that died.",
    )

    # Operator API
    api_enabled: bool = Field(True, description="Serve the REST API (/api/v1, docs at /api/docs).")
    api_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve the API on this port instead of the OCPP port (same host).",
    )

    # OCPP
    boot_policy: Literal["reject-unknown", "pending-unknown", "accept-all"] = Field(
        "reject-unknown",
        description="BootNotification of an unregistered charge point: Rejected, Pending "
        "(recorded for an operator to accept), or Accepted and registered (lab use).",
    )
    boot_retry_interval: int = Field(
        60, ge=1, description="Seconds a Pending/Rejected charge point waits before booting again."
    )
    seen_flush_interval: float = Field(
        5.0, gt=0, description="Seconds between writes of charge points' last-seen times."
    )
    heartbeat_interval: int = Field(
        300, ge=1, description="Seconds; sent in BootNotification.conf as `interval`."
    )
    call_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for a charge point's answer to our CALL."
    )
    allow_missing_subprotocol: bool = Field(
        True, description="Accept clients that offer no WebSocket subprotocol (logged)."
    )
    strict_outgoing: bool = Field(
        False,
        description="Raise on an invalid answer of ours (development); else answer InternalError.",
    )
    bad_frame_limit: int = Field(
        20,
        ge=1,
        description="Invalid frames per 10 s a charge point may send before it is cut off.",
    )

    # Charge point configuration (GetConfiguration / ChangeConfiguration)
    configuration_sync_on_boot: bool = Field(
        True,
        description="Fetch a charge point's configuration (GetConfiguration) after each "
        "Accepted BootNotification. Off: Kilowatt sends no CALL a charge point did not ask "
        "for (some test tools and operators want that).",
    )
    configuration_apply_on_boot: bool = Field(
        False,
        description="After each Accepted BootNotification, send the charge point the desired "
        "configuration values it does not have (ChangeConfiguration).",
    )

    # WebSocket
    ping_interval: float = Field(20.0, ge=0, description="Seconds between pings; 0 disables.")
    max_charge_points: int = Field(
        0,
        ge=0,
        description="Connected charge points this process accepts at most; more are refused "
        "with HTTP 503 and Retry-After before the upgrade. 0: as many as the open-file limit "
        "allows, less 512 files kept for the database, Redis and the API.",
    )
    ping_timeout: float = Field(20.0, gt=0, description="Seconds to wait for a pong.")
    close_timeout: float = Field(
        1.0,
        gt=0,
        description="Seconds to wait for the peer's close frame before dropping the TCP "
        "connection (a dead peer never sends it).",
    )
    max_message_size: int = Field(
        1_048_576, ge=1024, description="Largest WebSocket message accepted, in bytes."
    )

    # Security (OCPP 1.6 Security Whitepaper)
    # An int with bounds, not Literal[0, 1, 2, 3]: environment values arrive as text
    # and a Literal of ints would refuse "1".
    security_profile: int = Field(
        0,
        ge=0,
        le=3,
        description="Default profile: 0 none, 1 Basic Auth, 2 TLS + Basic Auth, "
        "3 TLS with client certificate. Overridable per charge point.",
    )
    tls_cert_file: Path | None = Field(None, description="RSA (or any) server certificate, PEM.")
    tls_key_file: Path | None = Field(None, description="Key of tls_cert_file, PEM.")
    tls_ec_cert_file: Path | None = Field(None, description="Second server certificate (EC).")
    tls_ec_key_file: Path | None = Field(None, description="Key of tls_ec_cert_file, PEM.")
    tls_client_ca_file: Path | None = Field(
        None, description="CA that signs charge point certificates (security profile 3)."
    )

    # Program
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["kv", "json"] = Field("kv", description="key=value lines or JSON lines.")
    use_uvloop: bool = Field(True, description="Run on uvloop when it is installed.")
    gil_switch_interval: float = Field(
        0.0005,
        gt=0,
        le=1,
        description="Seconds a thread may hold Python's GIL while another waits for it "
        "(sys.setswitchinterval; Python's default is 0.005). Shorter lets the database "
        "threads take their turn sooner while the event loop is busy.",
    )
    shutdown_timeout: float = Field(
        10.0, ge=0, description="Seconds in-flight handlers get to finish on shutdown."
    )
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans for every OCPP CALL in and out (needs "
        "opentelemetry-api installed; exporters are configured with OTEL_* variables).",
    )

    # Message log (every OCPP frame, for diagnostics)
    message_log_enabled: bool = Field(
        True, description="Log every OCPP frame in and out (GET .../charge-points/{id}/messages)."
    )
    message_log_database_url: str | None = Field(
        None,
        description="Database of the message log. Unset: the database itself, except with "
        "SQLite and message_log_process, where it is a file of its own beside the "
        "database's (kilowatt-messages.db beside kilowatt.db).",
    )
    message_log_process: bool = Field(
        True,
        description="Parse, redact and write the message log in a process of its own, off "
        "the event loop that serves the charge points; false: in the server's process. "
        "(With SQLite and the log in the main database file, always in the server's "
        "process.)",
    )
    message_log_max_payload: int = Field(
        4096, ge=64, description="Bytes of each frame kept in the message log; longer is cut."
    )
    message_log_retention_days: float = Field(
        7, gt=0, description="Days the message log keeps frames; older ones are deleted hourly."
    )
    message_log_flush_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between writes of the message log (frames not yet written are "
        "lost on a crash).",
    )
    message_log_buffer_size: int = Field(
        50_000,
        ge=100,
        description="Frames the message log holds while the database catches up; beyond, "
        "the oldest are dropped (and counted in a warning).",
    )

    # Events (GET /api/v1/events) and webhooks
    events_queue_size: int = Field(
        1000,
        ge=1,
        description="Events buffered per event stream subscriber; a slower one loses its oldest.",
    )
    events_keepalive_interval: float = Field(
        15.0, gt=0, description="Seconds between keep-alive comments on an idle event stream."
    )
    webhook_urls: list[AnyHttpUrl] = Field(
        default_factory=list,
        description='URLs every event is POSTed to as JSON (environment: a JSON list, ["https://…"]).',
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Key of the X-Kilowatt-Signature header (sha256=HMAC-SHA256 of the body); "
        "unset: no signature.",
    )
    webhook_max_attempts: int = Field(
        5, ge=1, description="Attempts per webhook delivery before it is given up."
    )
    webhook_backoff_initial: float = Field(
        1.0, gt=0, description="Seconds before the first webhook retry; doubles with each retry."
    )
    webhook_backoff_max: float = Field(
        16.0, gt=0, description="Longest wait between two webhook attempts, in seconds."
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="Seconds a webhook receiver has to answer one POST."
    )
    webhook_queue_size: int = Field(
        1000, ge=1, description="Events queued per webhook URL; when full, the oldest is dropped."
    )

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        pairs = (
            ("tls_cert_file", self.tls_cert_file, "tls_key_file", self.tls_key_file),
            ("tls_ec_cert_file", self.tls_ec_cert_file, "tls_ec_key_file", self.tls_ec_key_file),
        )
        for cert_name, cert, key_name, key in pairs:
            if (cert is None) != (key is None):
                raise ValueError(f"{cert_name} and {key_name} must be set together")
        if self.security_profile >= 2 and not self.tls_enabled:
            raise ValueError(
                f"security_profile {self.security_profile} needs TLS: set tls_cert_file and "
                "tls_key_file"
            )
        if self.security_profile == 3 and self.tls_client_ca_file is None:
            raise ValueError("security_profile 3 needs tls_client_ca_file")
        return self

    @model_validator(mode="after")
    def _check_tracing(self) -> Settings:
        if self.tracing:
            from kilowatt.tracing import TracingUnavailable, check_tracing_available

            try:
                check_tracing_available()
            except TracingUnavailable as exc:
                raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _check_webhooks(self) -> Settings:
        if self.webhook_backoff_max < self.webhook_backoff_initial:
            raise ValueError("webhook_backoff_max must be at least webhook_backoff_initial")
        return self

    @model_validator(mode="after")
    def _check_cluster(self) -> Settings:
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(
                f"redis_url {self.redis_url!r} is not a Redis URL: use redis://HOST:PORT/DB, "
                "rediss://… (TLS) or unix:///PATH"
            )
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                f"workers = {self.workers} needs redis_url: worker processes find each other's "
                "charge points through Redis (--redis-url redis://HOST:PORT/0), or use one worker"
            )
        if self.workers > 1 and (self.port == 0 or self.api_port == 0):
            raise ValueError("workers > 1 share one port: port (and api_port) cannot be 0")
        return self

    @property
    def message_log_url(self) -> str:
        """The message log's database (``message_log_database_url``, or derived)."""
        if self.message_log_database_url is not None:
            return self.message_log_database_url
        if not self.message_log_process:
            return self.database_url  # written by the server's own SQLite writer
        return sibling_sqlite_url(self.database_url, "-messages") or self.database_url

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None or self.tls_ec_cert_file is not None


def sibling_sqlite_url(url: str, suffix: str) -> str | None:
    """For ``sqlite:///DIR/NAME.EXT``: ``sqlite:///DIR/NAME{suffix}.EXT``, a file beside
    it; None for any other database (PostgreSQL, SQLite in memory)."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.split("+", 1)[0] != "sqlite" or not rest.startswith("/"):
        return None  # not SQLite, or sqlite:// (in memory)
    path, mark, query = rest[1:].partition("?")
    if not path or path == ":memory:" or path.startswith("file:") or "mode=memory" in query:
        return None
    database = PurePath(path)
    sibling = database.with_name(f"{database.stem}{suffix}{database.suffix}")
    return f"{scheme}:///{sibling}{mark}{query}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a TOML file, the environment and explicit overrides."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with config_file.open("rb") as handle:
                file_values = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration file {config_file}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file} is not valid TOML: {exc}") from exc

    class _FileSource(PydanticBaseSettingsSource):
        def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
            return file_values.get(field_name), field_name, False

        def __call__(self) -> dict[str, Any]:
            return dict(file_values)

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, _FileSource(settings_cls)

    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        loaded = _Loaded(**given)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, config_file)) from None
    return Settings.model_construct(**loaded.model_dump())


def _explain(exc: ValidationError, config_file: Path | None) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown setting (see `kilowatt serve --help` and the README)")
            continue
        env = f"KILOWATT_{where.upper()}" if where != "settings" else ""
        hint = f" (setting {where!r}, environment {env})" if env else ""
        lines.append(f"  {where}: {error['msg']}{hint}")
    if config_file is not None:
        lines.append(f"  configuration file: {config_file}")
    return "\n".join(lines)
