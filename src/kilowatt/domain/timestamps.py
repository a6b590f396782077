"""OCPP dateTime values (ISO 8601, OCPP-J 1.6 §4.1.6 asks for UTC with ``Z``)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["parse_timestamp", "utc_text"]


def parse_timestamp(text: str) -> datetime:
    """Parse an OCPP dateTime into an aware UTC datetime.

    Accepts the forms charge points really send: ``Z`` or an offset, fractions of any
    length, and (leniently) no zone at all, which OCPP-J says means UTC.
    Raises ValueError for anything else.
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # fromisoformat (3.11) accepts 1-6 fraction digits; trim longer fractions.
    dot = value.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(value) and value[end].isdigit():
            end += 1
        if end - dot - 1 > 6:
            value = value[: dot + 7] + value[end:]
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utc_text(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with ``Z``, microseconds when there are any (for files, scripts)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
