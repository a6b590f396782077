"""Run many simulated charge points: in this event loop, or one process per core.

:func:`run_simulation` is the entry point for demos, tests and benchmarks; a
:class:`Simulation` gives a test its charge points while they run. With
``processes > 1`` the charge points are shared out among that many child processes
(``spawn``), each with its own event loop; the parent sums their counters, prints
the progress line and returns the combined result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any, TextIO

from kilowatt.process import raise_open_file_limit
from kilowatt.simulator.charge_point import SimulatedChargePoint
from kilowatt.simulator.scenario import BUILTIN, Scenario
from kilowatt.simulator.stats import SimulationStats
from kilowatt.simulator.transport import TransportKind

__all__ = [
    "Simulation",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
    "run_simulation",
]

log = logging.getLogger("kilowatt.simulator")

CONNECT_CONCURRENCY = 200
STOP_GRACE = 15.0  # seconds the charge points get to stop their transactions and close
CHILD_START_GRACE = 60.0  # seconds a child process gets to start and report
POLL = 0.1


class SimulationError(Exception):
    """The simulation could not run; the message says why."""


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Charge point ``i`` (1…N) is ``{id_prefix}{i:05d}`` at ``{url}{id}``."""

    url: str
    charge_points: int = 1
    connectors: int = 2
    scenario: Scenario = BUILTIN
    duration: float | None = None  # seconds; None: until stopped
    id_prefix: str = "SIM"
    password: str | None = None  # Basic auth (security profile 1/2) as the charge point id
    processes: int = 1
    call_timeout: float = 30.0
    connect_timeout: float = 10.0
    transport: TransportKind = "auto"
    seed: int | None = None
    progress: TextIO | None = None  # a line per second (stderr for the command line)

    def charge_point_id(self, index: int) -> str:
        return f"{self.id_prefix}{index:05d}"

    def check(self) -> None:
        if not self.url.startswith(("ws://", "wss://")):
            raise SimulationError(f"--url must start with ws:// or wss://, got {self.url!r}")
        if self.charge_points < 1 or self.connectors < 1 or self.processes < 1:
            raise SimulationError("charge points, connectors and processes must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise SimulationError("--duration must be more than 0 seconds")
        longest = len(self.charge_point_id(self.charge_points))
        if longest > 48:
            raise SimulationError("charge point ids are at most 48 characters: shorten --id-prefix")


@dataclass
class SimulationResult:
    """What happened (counters summed over every process)."""

    url: str
    charge_points: int
    processes: int
    duration_s: float
    connected: int  # connections open at the end, before the charge points stopped
    boots: int
    reboots: int
    reconnects: int
    sessions_started: int
    sessions_completed: int
    remote_starts: int
    rejected: int
    messages_sent: int
    messages_received: int
    msgs_per_s: float
    errors: int
    error_breakdown: dict[str, int]
    calls_sent: dict[str, int]
    calls_answered: dict[str, int]
    first_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_stats(
        cls,
        config: SimulationConfig,
        stats: SimulationStats,
        *,
        duration: float,
        connected: int,
    ) -> SimulationResult:
        messages = stats.messages_sent + stats.messages_received
        return cls(
            url=config.url,
            charge_points=config.charge_points,
            processes=config.processes,
            duration_s=round(duration, 3),
            connected=connected,
            boots=stats.boots,
            reboots=stats.reboots,
            reconnects=stats.reconnects,
            sessions_started=stats.sessions_started,
            sessions_completed=stats.sessions_completed,
            remote_starts=stats.remote_starts,
            rejected=stats.rejected,
            messages_sent=stats.messages_sent,
            messages_received=stats.messages_received,
            msgs_per_s=round(messages / duration, 1) if duration > 0 else 0.0,
            errors=stats.error_count,
            error_breakdown={k: v for k, v in stats.errors.items() if v},
            calls_sent=dict(sorted(stats.calls_sent.items())),
            calls_answered=dict(sorted(stats.calls_answered.items())),
            first_errors=list(stats.first_errors),
        )

    def summary(self) -> str:
        breakdown = ", ".join(f"{k}={v}" for k, v in self.error_breakdown.items()) or "none"
        lines = [
            f"url             {self.url}",
            f"charge points   {self.charge_points} in {self.processes} process(es), "
            f"{self.connected} connected at the end of {self.duration_s:.1f} s",
            f"boots           {self.boots} (reboots {self.reboots}, reconnects {self.reconnects})",
            f"sessions        {self.sessions_started} started, {self.sessions_completed} "
            f"completed, {self.remote_starts} remote starts",
            f"messages        {self.messages_sent} sent, {self.messages_received} received "
            f"({self.msgs_per_s:,.0f}/s)",
            f"id tags refused {self.rejected}",
            f"errors          {self.errors} ({breakdown})",
        ]
        lines += [f"first error     {error}" for error in self.first_errors[:3]]
        if self.rejected and not self.sessions_started:
            lines.append(
                "hint            the Central System refused the id tags: register them "
                "(kilowatt id-tag add …) or use a scenario with authorize = false"
            )
        return "\n".join(lines)


class _Progress:
    """A status line per second on a stream (rewritten in place on a terminal)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.tty = stream is not None and stream.isatty()
        self._last_messages = 0
        self._last_time = time.monotonic()

    def line(self, elapsed: float, stats: SimulationStats, total: int) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        messages = stats.messages_sent + stats.messages_received
        rate = (messages - self._last_messages) / max(now - self._last_time, 1e-9)
        self._last_messages, self._last_time = messages, now
        text = (
            f"[simulate] {elapsed:5.0f}s connected {stats.connected}/{total} "
            f"charging {stats.charging} sessions {stats.sessions_started} "
            f"msgs/s {rate:,.0f} errors {stats.error_count}"
        )
        self.stream.write("\r" + text + "\x1b[K" if self.tty else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Simulation:
    """Simulated charge points in this event loop: ``await start()``, then ``stop()``."""

    def __init__(self, config: SimulationConfig, *, indices: Sequence[int] | None = None) -> None:
        config.check()
        self.config = config
        self.indices = (
            list(indices) if indices is not None else list(range(1, config.charge_points + 1))
        )
        self.stats = SimulationStats(charge_points=len(self.indices))
        self.charge_points: dict[str, SimulatedChargePoint] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._started = 0.0
        self._progress = _Progress(config.progress)

    async def start(self) -> None:
        config = self.config
        _raise_file_limit(len(self.indices) + 64)
        base = config.url if config.url.endswith("/") else config.url + "/"
        slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        for index in self.indices:
            charge_point_id = config.charge_point_id(index)
            seed = None if config.seed is None else config.seed * 1_000_003 + index
            self.charge_points[charge_point_id] = SimulatedChargePoint(
                charge_point_id,
                base + charge_point_id,
                scenario=config.scenario,
                connectors=config.connectors,
                stats=self.stats,
                rng=random.Random(seed),
                password=config.password,
                call_timeout=config.call_timeout,
                connect_timeout=config.connect_timeout,
                transport=config.transport,
                connect_slots=slots,
            )
        self._started = time.monotonic()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(charge_point))
            for charge_point in self.charge_points.values()
        ]
        self._ticker = loop.create_task(self._tick())

    def charge_point(self, charge_point_id: str) -> SimulatedChargePoint:
        return self.charge_points[charge_point_id]

    async def _run(self, charge_point: SimulatedChargePoint) -> None:
        try:
            await charge_point.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.error("internal", f"{charge_point.id}: {exc!r}")
            log.exception("simulated charge point failed", extra={"cp": charge_point.id})

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._progress.line(self.elapsed, self.stats, self.config.charge_points)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Until the configured duration is over or ``stop`` is set (no duration and
        no event: until cancelled)."""
        event = stop or asyncio.Event()
        timeout = self.config.duration
        remaining = None if timeout is None else max(timeout - self.elapsed, 0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await event.wait()

    async def stop(self, grace: float = STOP_GRACE) -> SimulationResult:
        """Stop every charge point (their transactions end, reason ``Other``); the result."""
        duration = self.elapsed
        connected = self.stats.connected
        for charge_point in self.charge_points.values():
            charge_point.stop()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._progress.close()
        return SimulationResult.from_stats(
            self.config, self.stats, duration=duration, connected=connected
        )


async def run_simulation(
    config: SimulationConfig, *, stop: asyncio.Event | None = None
) -> SimulationResult:
    """Run the simulation for ``config.duration`` seconds (or until ``stop`` is set)."""
    config.check()
    if config.processes > 1:
        return await _run_processes(config, stop)
    simulation = Simulation(config)
    await simulation.start()
    try:
        await simulation.wait(stop)
    finally:
        result = await simulation.stop()
    return result


# ------------------------------------------------------------------ processes


def _shards(count: int, parts: int) -> list[range]:
    """1…count in ``parts`` contiguous ranges of nearly equal size."""
    parts = min(parts, count)
    size, extra = divmod(count, parts)
    shards, start = [], 1
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        shards.append(range(start, end))
        start = end
    return shards


def _child(
    config: SimulationConfig,
    indices: range,
    shard: int,
    reports: multiprocessing.Queue[tuple[str, int, dict[str, Any]]],
    stop: ProcessEvent,
) -> None:
    """A child process: its share of the charge points; counters to the parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

    async def main() -> None:
        simulation = Simulation(config, indices=indices)
        await simulation.start()
        deadline = None if config.duration is None else time.monotonic() + config.duration
        last = 0.0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(POLL * 2)
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                reports.put(("progress", shard, simulation.stats.snapshot()))
        result = await simulation.stop()
        reports.put(("result", shard, {"stats": simulation.stats.snapshot(), **asdict(result)}))

    try:
        _event_loop_run(main())
    except BaseException as exc:
        reports.put(("error", shard, {"error": repr(exc)}))
        raise


def _event_loop_run(coroutine: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


async def _run_processes(config: SimulationConfig, stop: asyncio.Event | None) -> SimulationResult:
    context = multiprocessing.get_context("spawn")
    reports: multiprocessing.Queue[tuple[str, int, dict[str, Any]]] = context.Queue()
    stop_children = context.Event()
    shards = _shards(config.charge_points, config.processes)
    child_config = replace(config, processes=1, progress=None)
    processes = [
        context.Process(
            target=_child,
            args=(child_config, shard, number, reports, stop_children),
            name=f"kilowatt-simulate-{number}",
            daemon=True,
        )
        for number, shard in enumerate(shards)
    ]
    for process in processes:
        process.start()
    progress = _Progress(config.progress)
    started = time.monotonic()
    latest: dict[int, dict[str, Any]] = {}
    results: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    limit = None if config.duration is None else config.duration + CHILD_START_GRACE + STOP_GRACE
    stop_sent_at: float | None = None
    last_line = started
    try:
        while len(results) + len(failures) < len(processes):
            _drain(reports, latest, results, failures)
            now = time.monotonic()
            if now - last_line >= 1.0 and latest:
                last_line = now
                total = SimulationStats.combine(list(latest.values()))
                progress.line(now - started, total, config.charge_points)
            if stop_sent_at is None and stop is not None and stop.is_set():
                stop_children.set()
                stop_sent_at = now
            if stop_sent_at is not None and now - stop_sent_at > STOP_GRACE + 5:
                break
            if limit is not None and now - started > limit:
                break
            if not any(p.is_alive() for p in processes):
                _drain(reports, latest, results, failures)
                break
            await asyncio.sleep(POLL)
    finally:
        stop_children.set()
        for process in processes:
            await asyncio.get_running_loop().run_in_executor(None, process.join, STOP_GRACE)
            if process.is_alive():
                process.terminate()
                process.join(5)
        _drain(reports, latest, results, failures)
        reports.close()
        reports.join_thread()
        progress.close()
    if not results:
        detail = failures[0] if failures else "no child process reported"
        raise SimulationError(f"the simulation processes failed: {detail}")
    stats = SimulationStats.combine([r["stats"] for r in results.values()])
    for failure in failures:
        stats.error("internal", failure)
    return SimulationResult.from_stats(
        config,
        stats,
        duration=max(r["duration_s"] for r in results.values()),
        connected=sum(r["connected"] for r in results.values()),
    )


def _drain(
    reports: multiprocessing.Queue[tuple[str, int, dict[str, Any]]],
    latest: dict[int, dict[str, Any]],
    results: dict[int, dict[str, Any]],
    failures: list[str],
) -> None:
    while True:
        try:
            kind, shard, body = reports.get_nowait()
        except queue.Empty:
            return
        if kind == "progress":
            latest[shard] = body
        elif kind == "result":
            results[shard] = body
            latest[shard] = body["stats"]
        else:
            failures.append(f"process {shard}: {body.get('error')}")


def _raise_file_limit(needed: int) -> None:
    soft = raise_open_file_limit(needed)
    if soft is not None and soft < needed:
        raise SimulationError(
            f"{needed - 64} charge points need about {needed} open files but the limit is "
            f"{soft}: raise it (ulimit -n {needed}), use --processes or fewer --charge-points"
        )
