"""Time as a dependency: services take a Clock, tests pass a fake one."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "format_datetime"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    __slots__ = ("_mono", "_now")

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


def format_datetime(value: datetime) -> str:
    """OCPP dateTime: ISO 8601 in UTC with millisecond precision and a ``Z``."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times cheaper than strftime; it ends in "+00:00" for UTC.
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
