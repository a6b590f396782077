"""The message log: every OCPP frame in and out, per charge point, for diagnostics.

The gateway calls :meth:`MessageLog.frame_received` / :meth:`MessageLog.frame_sent`
for every frame, on the hot path, so they only append one tuple (charge point,
direction, monotonic time, the frame object as it is) to an in-memory buffer: no
parsing, no encoding, no logging, no I/O. A frame longer than the payload cap is
cut there already, so that the buffer stays bounded in bytes as well as in frames.

A background task takes the whole buffer every ``message_log_flush_interval``
seconds, turns it into rows on the event loop, a slice at a time (message type,
unique id and action parsed from the start of the frame; the action of a
CALLRESULT/CALLERROR taken from the CALL it answers; the text cut at
``message_log_max_payload`` bytes and marked truncated; the wall-clock time) and has
the store write them (:mod:`kilowatt.store.sql.message_log`: multi-row INSERTs on
SQLite, an INSERT from ``unnest()`` on PostgreSQL). By default all of this but the
buffer runs in a process of its own (:mod:`kilowatt.message_log_process`).

This is a diagnostic log, not a record anything depends on:

* frames not yet flushed when the process dies (about the last flush interval's
  worth, more if the database was falling behind) are lost; a clean stop writes
  them. Nothing is ever acknowledged to a charge point on the strength of the log;
* the buffer is bounded (``message_log_buffer_size`` frames; while the database
  fails, the rows waiting for a retry are bounded the same way): when the database
  cannot keep up, the oldest frames are dropped and counted (:attr:`MessageLog.dropped`)
  and a warning says how many, once per flush, never from the hot path;
* rows older than ``message_log_retention_days`` are deleted by a periodic purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from kilowatt.clock import Clock, SystemClock
from kilowatt.domain.configuration import redact_frame

__all__ = [
    "INCOMING",
    "OUTGOING",
    "Entry",
    "FrameRow",
    "LoggedFrame",
    "MessageLog",
    "MessageLogStore",
]

log = logging.getLogger("kilowatt.message_log")

INCOMING = "in"
OUTGOING = "out"

PURGE_INTERVAL = 3600.0
# Frames parsed and redacted per turn of the event loop when a batch is flushed.
PREPARE_SLICE = 256
# Unanswered CALLs remembered to name the action of their answer (bounded: a
# charge point that never answers must not grow it).
MAX_PENDING_CALLS = 10_000
MAX_ID_LENGTH = 64
HEAD_SPAN = 512

# The start of an OCPP-J frame: [type, "uniqueId", "Action"|"errorCode"|{...}.
_HEAD = re.compile(r'\s*\[\s*([234])\s*,\s*"((?:[^"\\]|\\.)*)"\s*(?:,\s*"((?:[^"\\]|\\.)*)")?')

# (charge point, direction, monotonic time, frame, original size or 0 when not cut)
Entry = tuple[str, str, float, str | bytes, int]


class FrameRow(NamedTuple):
    """One frame, ready to be stored (a tuple: thousands are built per flush)."""

    charge_point_id: str
    direction: str
    logged_at: datetime
    message_type: int | None
    unique_id: str | None
    action: str | None
    frame: str
    size: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class LoggedFrame:
    """One stored frame."""

    id: int
    charge_point_id: str
    direction: str
    logged_at: datetime
    message_type: int | None
    unique_id: str | None
    action: str | None
    frame: str
    size: int
    truncated: bool


class MessageLogStore(Protocol):
    async def insert(self, rows: Sequence[FrameRow]) -> None: ...

    async def list_messages(
        self,
        charge_point_id: str,
        *,
        limit: int = 100,
        before_id: int | None = None,
        direction: str | None = None,
        action: str | None = None,
    ) -> list[LoggedFrame]: ...

    async def purge(self, before: datetime) -> int: ...

    async def prepare(self) -> None:
        """Make the log's storage ready (its table) before the first write."""
        ...


def _utf8_prefix(raw: bytes, limit: int) -> tuple[str, bool]:
    """The longest text of at most ``limit`` UTF-8 bytes ``raw`` starts with; whether cut.

    Cut at a character boundary, never in the middle of one; bytes that are not
    UTF-8 (a binary frame) become U+FFFD, and the result is cut again to fit.
    """
    cut = len(raw) > limit
    if cut:
        raw = raw[: _boundary(raw, limit)]
    text = raw.decode("utf-8", "replace")
    if not text.isascii():
        encoded = text.encode()
        if len(encoded) > limit:
            text = encoded[: _boundary(encoded, limit)].decode()
            cut = True
    return text, cut


def _boundary(raw: bytes, limit: int) -> int:
    """``limit``, moved back to the start of the UTF-8 character it falls in."""
    end = limit
    while end > 0 and raw[end] & 0xC0 == 0x80:  # a continuation byte
        end -= 1
    return end


class MessageLog:
    """A :class:`kilowatt.gateway.connection.ConnectionObserver` that logs every frame."""

    def __init__(
        self,
        store: MessageLogStore,
        clock: Clock,
        *,
        max_payload: int = 4096,
        flush_interval: float = 1.0,
        buffer_size: int = 50_000,
        retention_days: float = 7,
    ) -> None:
        self._store = store
        self._clock = clock
        self.max_payload = max_payload
        self.flush_interval = flush_interval
        self.buffer_size = buffer_size
        self.retention = timedelta(days=retention_days)
        # The system clock's monotonic() is time.monotonic: call it directly and
        # save a Python frame per logged frame.
        self._monotonic: Callable[[], float] = (
            time.monotonic if type(clock) is SystemClock else clock.monotonic
        )
        self._buffer: deque[Entry] = deque(maxlen=buffer_size)
        # Rows prepared but not written (the database failed); retried first.
        self._unwritten: list[FrameRow] = []
        self._calls: dict[tuple[str, str, str], str] = {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self.dropped = 0
        self._dropped_reported = 0
        self.written = 0
        self.flushes = 0
        self._failing = False

    @property
    def restarts(self) -> int | None:
        """Times the process writing the log was started again; None: it is written
        in this process."""
        return None

    # ------------------------------------------------------------ hot path

    def frame_received(self, charge_point_id: str, data: str | bytes) -> None:
        size = 0
        if len(data) > self.max_payload:
            data, size = self._cut(data)
        buffer = self._buffer
        if len(buffer) == self.buffer_size:
            self.dropped += 1  # the deque drops the oldest itself
        buffer.append((charge_point_id, INCOMING, self._monotonic(), data, size))

    def frame_sent(self, charge_point_id: str, data: bytes) -> None:
        size = 0
        if len(data) > self.max_payload:
            size = len(data)
            data = data[: self.max_payload]
        buffer = self._buffer
        if len(buffer) == self.buffer_size:
            self.dropped += 1
        buffer.append((charge_point_id, OUTGOING, self._monotonic(), data, size))

    def accept(self, entries: Sequence[Entry]) -> None:
        """Buffer frames another process saw (its hot path's entries, as they were):
        the message log's own process (:mod:`kilowatt.message_log_process`)."""
        buffer = self._buffer
        overflow = len(buffer) + len(entries) - self.buffer_size
        if overflow > 0:
            self.dropped += overflow  # the deque drops the oldest itself
        buffer.extend(entries)

    def take(self) -> list[Entry]:
        """Everything buffered, in order, leaving the buffer empty (to ship it)."""
        batch = list(self._buffer)
        self._buffer.clear()
        return batch

    def _cut(self, data: str | bytes) -> tuple[str | bytes, int]:
        """Keep the start of a long frame (to the byte in :meth:`_prepare`), note its size."""
        if isinstance(data, bytes):
            size = len(data)
        else:
            size = len(data) if data.isascii() else len(data.encode("utf-8", "replace"))
        return data[: self.max_payload], size

    # ------------------------------------------------------------ flushing

    async def start(self) -> None:
        """Prepare the store, then start writing every ``flush_interval`` and purging."""
        await self._store.prepare()
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self._flush_periodically())
        self._purger = loop.create_task(self._purge_periodically())

    async def close(self) -> None:
        """Stop the background tasks and write what is buffered."""
        if self._purger is not None:
            # Each purge batch is its own transaction: stopping between two is fine.
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        # The flusher is asked, not cancelled: a flush cut short would lose its batch.
        self._stop.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        try:
            await self.flush()
        except Exception:
            log.exception("could not write the last frames of the message log")

    async def _flush_periodically(self) -> None:
        stop = self._stop
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await stop.wait()
            if stop.is_set():
                return  # close() writes the rest
            with contextlib.suppress(Exception):
                # flush() logged it (once per outage); the rows are kept for the next round.
                await self._periodic_flush()

    async def _periodic_flush(self) -> None:
        await self.flush()

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("could not purge the message log; will retry")
            await asyncio.sleep(PURGE_INTERVAL)

    async def flush(self) -> int:
        """Write the buffered frames now; return how many rows were written."""
        async with self._lock:
            try:
                return await self._flush()
            finally:
                self._report_drops()

    async def _flush(self) -> int:
        if not self._buffer and not self._unwritten:
            return 0
        entries = self.take()
        base = (self._clock.now(), self._monotonic())
        rows = self._unwritten
        self._unwritten = []
        if entries:
            try:
                # Parsing a few thousand frames takes milliseconds: on the event loop a
                # slice at a time, charge points served in between. (On a thread it held
                # the GIL against the loop in bursts, one switch interval at a time.)
                prepared: list[FrameRow] = []
                for start in range(0, len(entries), PREPARE_SLICE):
                    prepared += self._prepare(entries[start : start + PREPARE_SLICE], base)
                    await asyncio.sleep(0)
                rows.extend(prepared)
            except Exception:
                # A bug, not the database: the batch cannot be written, ever.
                self.dropped += len(entries)
                log.exception("could not prepare message log rows", extra={"frames": len(entries)})
        if not rows:
            return 0
        if len(rows) > self.buffer_size:
            # The database failed for a while: the newest buffer_size frames are kept
            # (so while it fails, at most twice that is held: these and the buffer).
            lost = len(rows) - self.buffer_size
            self.dropped += lost
            del rows[:lost]
        try:
            await self._store.insert(rows)
        except Exception as exc:
            self._unwritten = rows
            if not self._failing:
                log.warning(
                    "could not write the message log; keeping the frames and retrying",
                    extra={"frames": len(rows), "reason": repr(exc)},
                )
            self._failing = True
            raise
        if self._failing:
            log.info("message log written again", extra={"frames": len(rows)})
            self._failing = False
        self.written += len(rows)
        self.flushes += 1
        return len(rows)

    def _report_drops(self) -> None:
        dropped = self.dropped - self._dropped_reported
        if dropped:
            self._dropped_reported = self.dropped
            log.warning(
                "message log buffer full: oldest frames dropped",
                extra={
                    "dropped": dropped,
                    "dropped_total": self.dropped,
                    "buffer_size": self.buffer_size,
                },
            )

    def _prepare(self, batch: Sequence[Entry], base: tuple[datetime, float]) -> list[FrameRow]:
        wall, mono = base
        limit = self.max_payload
        calls = self._calls
        rows: list[FrameRow] = []
        for charge_point_id, direction, at, data, original in batch:
            if type(data) is str and data.isascii() and len(data) <= limit:
                text = data
                size = original or len(data)
                truncated = bool(original)
            else:
                raw = data if isinstance(data, bytes) else data.encode("utf-8", "replace")
                size = original or len(raw)
                text, cut = _utf8_prefix(raw, limit)
                truncated = bool(original) or cut
            if "\x00" in text:  # PostgreSQL text cannot hold NUL
                text = text.replace("\x00", "\ufffd")
            message_type: int | None = None
            unique_id: str | None = None
            action: str | None = None
            head = _HEAD.match(text, 0, HEAD_SPAN)
            if head is not None:
                message_type = int(head.group(1))
                unique_id = head.group(2)[:MAX_ID_LENGTH]
                if message_type == 2:
                    action = (head.group(3) or "")[:MAX_ID_LENGTH] or None
                    if action is not None:
                        if len(calls) >= MAX_PENDING_CALLS:
                            del calls[next(iter(calls))]
                        calls[(charge_point_id, direction, unique_id)] = action
                else:
                    answered = OUTGOING if direction == INCOMING else INCOMING
                    action = calls.pop((charge_point_id, answered, unique_id), None)
            # Write-only secrets (AuthorizationKey) never reach the log in clear.
            text = redact_frame(action, text)
            rows.append(
                FrameRow(
                    charge_point_id=charge_point_id,
                    direction=direction,
                    logged_at=wall - timedelta(seconds=mono - at),
                    message_type=message_type,
                    unique_id=unique_id,
                    action=action,
                    frame=text,
                    size=size,
                    truncated=truncated,
                )
            )
        return rows

    # ------------------------------------------------------------- queries

    async def list_messages(
        self,
        charge_point_id: str,
        *,
        limit: int = 100,
        before_id: int | None = None,
        direction: str | None = None,
        action: str | None = None,
    ) -> list[LoggedFrame]:
        """Stored frames of a charge point, newest first (the last flush interval's
        frames are not there yet)."""
        return await self._store.list_messages(
            charge_point_id, limit=limit, before_id=before_id, direction=direction, action=action
        )

    async def purge(self) -> int:
        """Delete the frames older than the retention period; return how many went."""
        cutoff = self._clock.now() - self.retention
        deleted = await self._store.purge(cutoff)
        if deleted:
            log.info(
                "message log purged",
                extra={"deleted": deleted, "before": cutoff.isoformat(timespec="seconds")},
            )
        return deleted
