"""``kilowatt serve --workers N``: N worker processes serving one port, supervised.

The parent prepares the database once (creates or upgrades the SQLite schema,
checks that PostgreSQL's is current), then starts N workers. Each is a complete
``kilowatt serve`` with SO_REUSEPORT on its listening socket, so the kernel spreads
new connections over them, and a cluster node of its own (``redis_url`` is
required): whichever worker an API request lands on reaches a charge point held
by any other worker, or any other machine of the cluster.

The parent forwards SIGINT and SIGTERM to the workers (as SIGTERM: each stops
gracefully) and exits once they all stopped, after ``shutdown_timeout`` plus
:data:`STOP_GRACE` seconds at most (then it kills the rest). A worker that dies
unexpectedly is started again after a growing delay, at most
:data:`RESTART_LIMIT` times in :data:`RESTART_WINDOW` seconds; a worker that fails
before it ever served, or too often, stops the whole server with exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from kilowatt.cluster import ClusterUnavailable
from kilowatt.config import Settings
from kilowatt.logs import configure_logging

__all__ = ["Supervisor", "supervise"]

log = logging.getLogger("kilowatt.workers")

RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
RESTART_DELAY_FIRST = 0.5
RESTART_DELAY_MAX = 10.0
STOP_GRACE = 15.0
START_TIMEOUT = 120.0
POLL = 0.5
EXIT_SERVE_FAILED = 3  # a worker could not start serving (port, database)


def supervise(settings: Settings) -> int:
    """Prepare the database, run the workers until a signal; the exit code."""
    try:
        asyncio.run(_prepare_database(settings))
    except Exception as exc:
        print(f"kilowatt: cannot prepare the database: {exc}", file=sys.stderr)
        return 1
    return Supervisor(settings).run()


async def _prepare_database(settings: Settings) -> None:
    from kilowatt.app import prepare_store
    from kilowatt.store.sql.database import open_store

    store = open_store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await prepare_store(store, migrate=store.dialect == "sqlite")
    finally:
        await store.close()


class _Worker:
    __slots__ = ("index", "process", "ready", "restarts", "served", "status")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.status: Connection | None = None  # the worker says "ready" on it
        self.ready = False
        self.served = False  # was ever ready
        self.restarts: deque[float] = deque()


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(index) for index in range(1, settings.workers + 1)]
        self._due: dict[int, float] = {}  # worker index → when to start it again
        self._signal: int | None = None
        self._stopping = False
        self._deadline = 0.0
        self.exit_code = 0

    # ----------------------------------------------------------------- run

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            log.info(
                "starting workers",
                extra={
                    "workers": self.settings.workers,
                    "port": self.settings.port,
                    "supervisor_pid": os.getpid(),
                },
            )
            for worker in self._workers:
                self._start(worker)
            self._loop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("all workers stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signum

    def _loop(self) -> None:
        while True:
            if self._signal is not None and not self._stopping:
                log.info("stopping workers", extra={"signal": signal.Signals(self._signal).name})
                self._stop_all()
            alive = [w for w in self._workers if w.process is not None]
            if self._stopping and not alive:
                return
            now = time.monotonic()
            if self._stopping and now > self._deadline:
                for worker in alive:
                    assert worker.process is not None
                    log.warning(
                        "worker did not stop in time; killed",
                        extra={"worker": worker.index, "pid": worker.process.pid},
                    )
                    worker.process.kill()
                    worker.process.join(5)
                    self._forget(worker)
                return
            timeout = POLL
            if self._due and not self._stopping:
                timeout = max(0.0, min(timeout, min(self._due.values()) - now))
            waitables: list[Any] = [w.process.sentinel for w in alive if w.process is not None]
            waitables += [w.status for w in alive if w.status is not None and not w.ready]
            if waitables:
                wait(waitables, timeout=timeout)
            else:
                time.sleep(timeout)
            self._check(alive)
            self._restart_due()

    def _check(self, alive: list[_Worker]) -> None:
        for worker in alive:
            process = worker.process
            assert process is not None
            status = worker.status
            if not worker.ready and status is not None:
                with contextlib.suppress(EOFError, OSError):
                    if status.poll():
                        node = status.recv()
                        worker.ready = worker.served = True
                        log.info(
                            "worker ready",
                            extra={"worker": worker.index, "pid": process.pid, "node": node},
                        )
            if process.is_alive():
                continue
            code = process.exitcode
            self._forget(worker)
            if self._stopping:
                log.info(
                    "worker stopped",
                    extra={"worker": worker.index, "pid": process.pid, "exit_code": code},
                )
                continue
            self._failed(worker, process.pid, code)

    def _failed(self, worker: _Worker, pid: int | None, code: int | None) -> None:
        now = time.monotonic()
        while worker.restarts and now - worker.restarts[0] > RESTART_WINDOW:
            worker.restarts.popleft()
        if not worker.served or code == EXIT_SERVE_FAILED:
            log.error(
                "worker could not start serving; stopping",
                extra={"worker": worker.index, "pid": pid, "exit_code": code},
            )
        elif len(worker.restarts) >= RESTART_LIMIT:
            log.error(
                "worker keeps dying; stopping",
                extra={
                    "worker": worker.index,
                    "pid": pid,
                    "exit_code": code,
                    "restarts": len(worker.restarts),
                    "window_s": RESTART_WINDOW,
                },
            )
        else:
            delay = min(RESTART_DELAY_FIRST * 2 ** len(worker.restarts), RESTART_DELAY_MAX)
            worker.restarts.append(now)
            self._due[worker.index] = now + delay
            log.warning(
                "worker exited unexpectedly; restarting it",
                extra={
                    "worker": worker.index,
                    "pid": pid,
                    "exit_code": code,
                    "restart_in_s": delay,
                    "restarts": len(worker.restarts),
                },
            )
            return
        self.exit_code = 1
        self._stop_all()

    def _restart_due(self) -> None:
        if self._stopping:
            self._due.clear()
            return
        now = time.monotonic()
        for worker in self._workers:
            due = self._due.get(worker.index)
            if due is not None and due <= now:
                del self._due[worker.index]
                self._start(worker)

    # ------------------------------------------------------------ processes

    def _start(self, worker: _Worker) -> None:
        receiver, sender = self._context.Pipe(duplex=False)
        values = self.settings.model_dump()
        process = self._context.Process(
            target=run_worker,
            args=(values, worker.index, sender),
            name=f"kilowatt-worker-{worker.index}",
        )
        process.start()
        sender.close()  # the worker holds the other end
        worker.process, worker.status, worker.ready = process, receiver, False
        log.info("worker started", extra={"worker": worker.index, "pid": process.pid})

    def _forget(self, worker: _Worker) -> None:
        if worker.status is not None:
            worker.status.close()
        worker.process, worker.status, worker.ready = None, None, False

    def _stop_all(self) -> None:
        self._stopping = True
        self._due.clear()
        self._deadline = time.monotonic() + self.settings.shutdown_timeout + STOP_GRACE
        for worker in self._workers:
            if worker.process is not None and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)


# ---------------------------------------------------------------- the worker


def run_worker(values: dict[str, Any], index: int, status: Connection) -> None:
    """A worker process's main (spawned): serve until SIGTERM."""
    # The supervisor turns SIGINT (Ctrl-C reaches the whole process group) into one
    # SIGTERM per worker; reacting to both would stop twice.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    base = values.get("node_id")
    values["node_id"] = f"{base}-{index}" if base else None
    settings = Settings.model_construct(**values)
    configure_logging(settings.log_level, settings.log_format)
    try:
        if settings.use_uvloop:
            try:
                import uvloop
            except ImportError:
                pass
            else:
                uvloop.run(_serve(settings, status))
                return
        asyncio.run(_serve(settings, status))
    except (OSError, ClusterUnavailable) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.error(
            "worker cannot serve", extra={"worker": index, "port": settings.port, "reason": reason}
        )
        raise SystemExit(EXIT_SERVE_FAILED) from None


async def _serve(settings: Settings, status: Connection) -> None:
    from kilowatt.app import create_app, raise_file_limit, tune_interpreter

    raise_file_limit()
    app = create_app(settings)
    await app.start()
    tune_interpreter(settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        status.send(app.cluster.node_id if app.cluster is not None else "")
        status.close()
        await stop.wait()
    finally:
        log.info("shutting down")
        await app.stop()
        log.info("stopped")
