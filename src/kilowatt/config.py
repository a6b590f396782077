"""Settings: defaults < TOML file (``--config``) < ``KILOWATT_*`` environment < flags.

Every setting is validated at start; a bad value stops the program with a message
that names the setting and says what is expected.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
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

    # WebSocket
    ping_interval: float = Field(20.0, ge=0, description="Seconds between pings; 0 disables.")
    ping_timeout: float = Field(20.0, gt=0, description="Seconds to wait for a pong.")
    max_message_size: int = Field(
        1_048_576, ge=1024, description="Largest WebSocket message accepted, in bytes."
    )

    # Security (OCPP 1.6 Security Whitepaper)
    security_profile: Literal[0, 1, 2, 3] = Field(
        0,
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
    shutdown_timeout: float = Field(
        10.0, ge=0, description="Seconds in-flight handlers get to finish on shutdown."
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

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None or self.tls_ec_cert_file is not None


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
