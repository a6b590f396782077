"""The message log in a process of its own (``message_log_process``, the default).

Logging every frame costs more than it looks: each one is parsed, redacted, turned
into a row with its wall-clock time, and inserted. In the server's process that is
done by the event loop that serves the charge points, between their messages, and
by the SQLite writer thread competing with it for the GIL: about a quarter of the
loop's time under load. Here the server keeps only the hot path of
:class:`~kilowatt.services.message_log.MessageLog` (one tuple appended to a buffer
per frame) and ships the buffer every :data:`SHIP_INTERVAL` to a child process,
``python -m kilowatt.message_log_process``, that runs the rest — the same
``MessageLog`` on a store of its own: it prepares, inserts (every
``message_log_flush_interval``) and purges.

* **The pipe.** The child's stdin: a ``marshal`` blob of settings first, then one
  blob per shipment, each a list of the buffer's entries as they were, prefixed
  with its length (4 bytes, little endian). Both ends run the same interpreter.
  The child answers ``ready`` on its stdout once its table exists, then only
  ``written`` (or ``not written``) to a request to write what it holds now
  (:meth:`ShippedMessageLog.flush`); its log lines go to the server's stderr.
* **Times.** An entry carries the ``time.monotonic()`` of its frame; the child turns
  it into wall-clock time with its own clocks (``CLOCK_MONOTONIC`` is the same in
  every process of a machine).
* **Stopping.** The child ignores SIGINT and SIGTERM (a terminal's Ctrl-C, or a
  service manager, signals every process of the group): it stops when its stdin
  closes — the server closing it at a clean stop, after the last shipment, or the
  kernel when the server dies — and writes what it holds before it exits.
* **Failures.** The child fails to start: the server does not start either, and
  says why (or set ``message_log_process = false``). It dies later: the server
  logs it and starts another, at most every :data:`RESTART_INTERVAL`; frames wait
  in the bounded buffer meanwhile, as they do while the database is down. Frames
  shipped to a process that died unflushed are lost: this is a diagnostic log
  (:mod:`kilowatt.services.message_log`), nothing is acknowledged on its strength.
  It stops reading (stopped, deadlocked): once its pipe has stayed full for
  ``stop_timeout``, the batch is dropped and the child killed, so that neither the
  shipments nor a stop of the server wait for it.
* **SQLite.** The child must not share the main database file: the server's writer
  holds its write lock nearly all the time under load, and SQLite has no queue
  for the lock, so the child would starve. Hence the log's own file
  (``message_log_database_url``; ``kilowatt-messages.db`` beside ``kilowatt.db``).
  Its inserts are not fsynced one by one (a crash of either process loses none of
  them; a power cut may lose the last seconds'). The server reads it (the API)
  through a store of its own on that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import marshal
import os
import signal
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

from kilowatt.clock import Clock, SystemClock
from kilowatt.services.message_log import MessageLog, MessageLogStore

if TYPE_CHECKING:
    from kilowatt.store.sql.database import SqlStore
    from kilowatt.store.sql.message_log import SqlMessageLog

__all__ = [
    "MessageLogProcessError",
    "ShippedMessageLog",
    "child_log_store",
    "main",
    "start_child",
]

log = logging.getLogger("kilowatt.message_log")

_LENGTH = struct.Struct("<I")
READY = b"ready\n"
WRITTEN = b"written\n"
NOT_WRITTEN = b"not written\n"
# Asks the child to write what it holds now and answer WRITTEN (MessageLog.flush).
_WRITE_NOW = "write"
# Seconds between two shipments (a few thousand frames under load: well under a
# millisecond of the loop to encode and hand to the pipe).
SHIP_INTERVAL = 0.1
# Seconds the child has to start (import, open its database, create its table).
START_TIMEOUT = 60.0
# Seconds the child has at a stop to write what it holds.
STOP_TIMEOUT = 30.0
# Seconds between two attempts to start a child that died.
RESTART_INTERVAL = 5.0
# Bytes of the pipe's kernel buffer (Linux; the default 64 KiB holds a fraction of
# a shipment under load).
PIPE_SIZE = 1 << 20
# Added to the child's nice value: the server's event loop comes first.
NICENESS = 10


class MessageLogProcessError(RuntimeError):
    """The message log's process could not be started."""


class ShippedMessageLog(MessageLog):
    """The server's side: buffers every frame like :class:`MessageLog` (the same hot
    path) and ships the buffer to the child; lists frames from the log's database
    itself. ``config``: the child's settings (see :func:`main`)."""

    def __init__(
        self,
        store: MessageLogStore,
        clock: Clock,
        *,
        config: dict[str, Any],
        max_payload: int = 4096,
        buffer_size: int = 50_000,
        retention_days: float = 7,
        ship_interval: float = SHIP_INTERVAL,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        restart_interval: float = RESTART_INTERVAL,
    ) -> None:
        super().__init__(
            store,
            clock,
            max_payload=max_payload,
            flush_interval=ship_interval,
            buffer_size=buffer_size,
            retention_days=retention_days,
        )
        # The child converts times with the system's clocks (module docstring).
        self._monotonic = time.monotonic
        self._config = config
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._restart_interval = restart_interval
        self._process: asyncio.subprocess.Process | None = None
        self._next_start = 0.0
        self._ack_lock = asyncio.Lock()
        self._started = False
        self._restarts = 0

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def pid(self) -> int | None:
        """The child's process id (None: not running)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        """Start the child (raises :class:`MessageLogProcessError` if it cannot) and the
        shipments; the child prepares the store and purges, not this process."""
        self._process = await self._spawn()
        self._started = True
        self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await start_child()
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None and stdout is not None
        pipe = stdin.get_extra_info("pipe")
        if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        line = b""
        try:
            async with asyncio.timeout(self._start_timeout):
                _send(stdin, marshal.dumps(self._config))
                await stdin.drain()
                line = await stdout.readline()
        except (TimeoutError, OSError):
            pass
        if line != READY:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
            raise MessageLogProcessError(
                f"the message log process did not start (exit code {code}; its error is "
                "logged above): fix what it says, or set message_log_process = false "
                "(KILOWATT_MESSAGE_LOG_PROCESS=false) to write the log in the server's process"
            )
        return process

    async def _periodic_flush(self) -> None:
        await MessageLog.flush(self)  # ship, without waiting for the child to write

    async def flush(self) -> int:
        """Ship what is buffered and wait until the process has written it; return
        how many frames were shipped."""
        shipped = await MessageLog.flush(self)
        async with self._ack_lock:
            process = self._process
            if process is None or process.returncode is not None:
                return shipped
            assert process.stdin is not None and process.stdout is not None
            _send(process.stdin, marshal.dumps(_WRITE_NOW))
            async with asyncio.timeout(self._stop_timeout):
                await process.stdin.drain()
                answer = await process.stdout.readline()
            if answer != WRITTEN:
                raise MessageLogProcessError(
                    "the message log process could not write the frames (database unavailable?)"
                    if answer == NOT_WRITTEN
                    else "the message log process exited before it wrote the frames; "
                    "see its error above"
                )
        return shipped

    async def _flush(self) -> int:
        """Ship the buffer (the base class would write it here)."""
        if not self._buffer:
            return 0
        process = await self._running()
        if process is None:
            return 0  # the frames wait in the buffer (bounded) for the next child
        assert process.stdin is not None
        batch = self.take()
        try:
            _send(process.stdin, marshal.dumps(batch))
            # The child reads its pipe while it writes the database: a pipe that stays
            # full means it is stuck (stopped, deadlocked), and a stop must not wait.
            async with asyncio.timeout(self._stop_timeout):
                await process.stdin.drain()
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.dropped += len(batch)
            log.error(
                "the message log process stopped taking frames; their batch is lost",
                extra={"frames": len(batch), "reason": repr(exc), "pid": process.pid},
            )
            if isinstance(exc, TimeoutError):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()  # the next shipment starts another
            return 0
        self.flushes += 1
        return len(batch)

    async def _running(self) -> asyncio.subprocess.Process | None:
        """The child, started again if it died (at most every restart_interval)."""
        process = self._process
        if process is not None and process.returncode is None:
            return process
        if process is not None:
            self._process = None
            log.error(
                "the message log process exited; starting another",
                extra={"exit_code": process.returncode, "pid": process.pid},
            )
        now = time.monotonic()
        if now < self._next_start:
            return None
        self._next_start = now + self._restart_interval
        try:
            self._process = await self._spawn()
        except MessageLogProcessError as exc:
            log.error("%s; retrying in %.0f s", exc, self._restart_interval)
            return None
        self._restarts += 1
        return self._process

    async def close(self) -> None:
        """Ship what is buffered, then let the child write it and exit."""
        if not self._started:
            return  # start() failed: no child, nothing buffered worth one
        self._started = False
        await super().close()  # the last shipment
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(self._stop_timeout):
                code = await process.wait()
        except TimeoutError:
            log.error(
                "the message log process did not finish writing in time; stopping it",
                extra={"seconds": self._stop_timeout, "pid": process.pid},
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
        if code != 0:
            log.error("the message log process ended with an error", extra={"exit_code": code})


async def start_child() -> asyncio.subprocess.Process:
    """``python -m kilowatt.message_log_process`` with its stdin and stdout piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kilowatt.message_log_process",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


def _send(stream: asyncio.StreamWriter, blob: bytes) -> None:
    stream.write(_LENGTH.pack(len(blob)) + blob)


# ------------------------------------------------------------------ the child


async def _read_blob(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


async def _child() -> int:
    from kilowatt.logs import configure_logging
    from kilowatt.store.sql.database import open_store

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    # The process's own stdin, unbuffered (a pipe: nothing blocks).
    stdin = os.fdopen(0, "rb", buffering=0, closefd=False)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    try:
        config: dict[str, Any] = marshal.loads(await _read_blob(reader))
    except asyncio.IncompleteReadError:
        return 0  # the server went away before it said anything
    configure_logging(config["log_level"], config["log_format"])
    # One insert (or purge) at a time: a connection or two of the pool, never more.
    store = open_store(config["url"], sqlite_synchronous=config["sqlite_synchronous"])
    try:
        message_log = MessageLog(
            child_log_store(store),
            SystemClock(),
            max_payload=config["max_payload"],
            flush_interval=config["flush_interval"],
            buffer_size=config["buffer_size"],
            retention_days=config["retention_days"],
        )
        try:
            await message_log.start()  # its table first
        except Exception:
            log.exception("the message log process cannot use its database; check the URL")
            return 1
        log.info(
            "message log process ready", extra={"pid": os.getpid(), "database": config["database"]}
        )
        try:
            sys.stdout.buffer.write(READY)
            sys.stdout.buffer.flush()
            while True:
                try:
                    blob = await _read_blob(reader)
                except asyncio.IncompleteReadError:
                    break  # stdin closed: the server stopped (or died)
                message = marshal.loads(blob)
                if message == _WRITE_NOW:
                    try:
                        await message_log.flush()
                    except Exception:  # logged by the log; its rows are kept for a retry
                        answer = NOT_WRITTEN
                    else:
                        answer = WRITTEN
                    sys.stdout.buffer.write(answer)
                    sys.stdout.buffer.flush()
                else:
                    message_log.accept(message)
        finally:
            await message_log.close()  # writes what is buffered
    finally:
        await store.close()
    return 0


def child_log_store(store: SqlStore) -> SqlMessageLog:
    """The child's store of the log: a flush (a second's frames, thousands under load)
    in one transaction. Its database has no other writer whose commits would wait
    between chunks (its SQLite file is its own; on PostgreSQL it writes on a connection
    of its own), and every chunk's commit costs as much as its inserts."""
    from kilowatt.store.sql.message_log import SqlMessageLog

    return SqlMessageLog(store, insert_chunk=None)


def main() -> None:
    """``python -m kilowatt.message_log_process``: started by ``kilowatt serve``."""
    # The server stops this process by closing its stdin (module docstring).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Background work: the server's event loop comes first when they share a core.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    sys.exit(asyncio.run(_child()))


if __name__ == "__main__":
    main()
