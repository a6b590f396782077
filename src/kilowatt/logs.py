"""Structured logs: one line per event, ``key=value`` or JSON, with the charge point id.

Callers log an event name as the message and the facts as ``extra`` fields::

    log.info("connected", extra={"charge_point": "CP1", "remote": "10.0.0.5"})
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from kilowatt.domain.configuration import mentions_secret

__all__ = ["JsonFormatter", "KeyValueFormatter", "SecretFrameFilter", "configure_logging"]

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exception"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_quote(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_fields(record), default=str).decode()


class SecretFrameFilter(logging.Filter):
    """The WebSocket library logs whole frames at DEBUG: one that carries a write-only
    configuration value (AuthorizationKey) is logged without its content."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("websockets") and mentions_secret(record.getMessage()):
            record.msg = "frame with a write-only configuration value (content not logged)"
            record.args = None
        return True


def configure_logging(level: str = "info", fmt: str = "kv") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SecretFrameFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The WebSocket library logs every failed handshake at INFO/ERROR with its own
    # wording; our gateway logs those events itself, with the charge point id.
    quiet = logging.WARNING if level != "debug" else logging.DEBUG
    logging.getLogger("websockets").setLevel(quiet)
    # Migrations report themselves through kilowatt's own "database ready" line.
    logging.getLogger("alembic").setLevel(quiet)
