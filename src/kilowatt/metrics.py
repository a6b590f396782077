"""Prometheus metrics of one Kilowatt process, served at ``GET /metrics``.

One :class:`Metrics` object per process, made by the composition root, owns its
``CollectorRegistry`` (no module-level registry): two applications in one process
(tests) never share a series. What it measures:

* from the gateway's connections (:class:`kilowatt.gateway.connection.ConnectionMetrics`,
  called on the hot path): OCPP messages by action, direction and type, CallErrors by
  code, the handler latency of every incoming CALL, the latency, outcome and timeouts
  of the CALLs we send;
* from the store (``SqlStore.on_group_committed``, ``SqlStore.on_fsync``): the commit
  latency of units of work, the size of each group commit and, on SQLite with
  ``synchronous=FULL``, how long each fsync of the WAL took (the disk's share);
* at scrape time: connected charge points and the outgoing CALLs waiting in each
  connection's queue (summed over this process's connections), the units of work
  waiting for the next group commit, and the active transactions, counted in the
  database (so the number survives restarts and is the same, database-wide, on every
  process of a cluster: aggregate it with ``max``, not ``sum``); the count is taken
  at most once every :data:`ACTIVE_TRANSACTIONS_MAX_AGE` seconds.

The hot path stays cheap: the hooks only add to plain integers and bucket lists kept
per action (bound once, when the object is made, for every OCPP 1.6 action), with no
lock (everything runs on the event loop) and no prometheus-client call; the registry's
collector turns them into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Protocol, TypeVar

import orjson
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kilowatt.gateway.connection import ChargePointConnection
from kilowatt.protocol.errors import CallErrorReceived, CallTimeout, ErrorCode, NotConnected
from kilowatt.protocol.session import InvalidCallResult
from kilowatt.store.base import Repositories

__all__ = [
    "ACTIVE_TRANSACTIONS_MAX_AGE",
    "CONTENT_TYPE",
    "Metrics",
]

log = logging.getLogger("kilowatt.metrics")

T = TypeVar("T")

# The classic text format, which every Prometheus-compatible scraper reads.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
ACTIVE_TRANSACTIONS_MAX_AGE: Final = 5.0

# Seconds. Handlers answer in about a millisecond, more when they wait for a commit.
HANDLER_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Seconds. A charge point answers over a mobile network: tens of ms to the timeout.
COMMAND_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
COMMIT_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
GROUP_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Seconds. A local SSD syncs in well under a millisecond, a network volume in several.
FSYNC_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

OTHER: Final = "other"  # the action label of CALLs with an action OCPP 1.6 does not have
_RESULT_BYTE: Final = ord("3")  # our frames are built by orjson: b'[3,"…' or b'[4,"…'
_KNOWN_CODES: Final = frozenset(code.value for code in ErrorCode)


class _Histogram:
    """Bucket counts and a sum; ``counts[i]`` holds the values in (bound[i-1], bound[i]]."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float, weight: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += weight
        self.total += value * weight

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            buckets.append((_format_bound(bound), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return buckets


def _format_bound(bound: float) -> str:
    return repr(float(bound))


class _Action:
    """Everything counted for one action (slots: cheap attribute increments)."""

    __slots__ = (
        "calls_in",
        "calls_out",
        "command",
        "errors_in",
        "errors_out",
        "handler",
        "lost",
        "results_in",
        "results_out",
        "timeouts",
    )

    def __init__(self) -> None:
        self.calls_in = 0  # CALLs the charge point sent
        self.results_out = 0  # our CALLRESULTs
        self.errors_out = 0  # our CALLERRORs
        self.calls_out = 0  # CALLs we sent
        self.results_in = 0  # its CALLRESULTs
        self.errors_in = 0  # its CALLERRORs
        self.timeouts = 0  # our CALLs it did not answer in time
        self.lost = 0  # our CALLs lost with the connection
        self.handler = _Histogram(HANDLER_BUCKETS)
        self.command = _Histogram(COMMAND_BUCKETS)


class MeasuredStore(Protocol):
    """What the metrics use of the store (``kilowatt.store.sql.database.SqlStore``)."""

    on_group_committed: Callable[[int, float], None] | None
    on_fsync: Callable[[float], None] | None

    @property
    def pending_writes(self) -> int: ...

    async def read(self, work: Callable[[Repositories], T]) -> T: ...


class MeasuredLog(Protocol):
    """The message log, as the metrics see it (:mod:`kilowatt.services.message_log`)."""

    @property
    def dropped(self) -> int: ...

    @property
    def restarts(self) -> int | None:
        """Restarts of the log's own process; None: the log is written in this one."""
        ...


class Connections(Protocol):
    """The connections of this process (``kilowatt.gateway.registry.ConnectionRegistry``)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[ChargePointConnection]: ...


class Metrics:
    """The metrics of one process; see the module docstring.

    It is the gateway's :class:`~kilowatt.gateway.connection.ConnectionMetrics`;
    :meth:`attach_store` makes it the store's group-commit callback.
    """

    def __init__(
        self,
        *,
        actions: Iterable[str] = (),
        connections: Connections | None = None,
        store: MeasuredStore | None = None,
        process_metrics: bool = True,
        active_transactions_max_age: float = ACTIVE_TRANSACTIONS_MAX_AGE,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._actions: dict[str, _Action] = {action: _Action() for action in actions}
        self._other = _Action()
        # (direction, action, code) -> count
        self._call_errors: dict[tuple[str, str, str], int] = {}
        self._connections = connections
        self._store: MeasuredStore | None = None
        self._message_log: MeasuredLog | None = None
        self._unit_of_work = _Histogram(COMMIT_BUCKETS)
        self._group_size = _Histogram(GROUP_SIZE_BUCKETS)
        self._fsync = _Histogram(FSYNC_BUCKETS)
        self.active_transactions_max_age = active_transactions_max_age
        self._active_transactions: int | None = None
        self._active_sampled_at = float("-inf")
        self.registry.register(_Collector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            if GC_COLLECTOR is not None:  # CPython: gc statistics
                GCCollector(registry=self.registry)
        if store is not None:
            self.attach_store(store)

    def attach_message_log(self, message_log: MeasuredLog) -> None:
        """Report the message log's lost frames (and its process's restarts)."""
        self._message_log = message_log

    def attach_store(self, store: MeasuredStore) -> None:
        self._store = store
        store.on_group_committed = self.group_committed
        store.on_fsync = self.fsynced

    def _stats(self, action: str | None) -> _Action:
        stats = self._actions.get(action) if action is not None else None
        return self._other if stats is None else stats

    # ---------------------------------------------------- connection hooks (hot)

    def call_handled(self, charge_point_id: str, action: str, frame: bytes, seconds: float) -> None:
        stats = self._actions.get(action)
        if stats is None:
            stats = self._other
        stats.calls_in += 1
        if frame[1] == _RESULT_BYTE:
            stats.results_out += 1
        else:
            stats.errors_out += 1
            self._count_error("out", action, _error_code(frame))
        handler = stats.handler
        handler.counts[bisect_left(handler.bounds, seconds)] += 1
        handler.total += seconds

    def call_refused(self, charge_point_id: str, action: str | None, code: str) -> None:
        stats = self._stats(action)
        stats.calls_in += 1
        stats.errors_out += 1
        self._count_error("out", action if stats is not self._other else OTHER, code)

    def command_sent(self, charge_point_id: str, action: str) -> None:
        self._stats(action).calls_out += 1

    def command_settled(
        self, charge_point_id: str, action: str, seconds: float, error: Exception | None
    ) -> None:
        stats = self._stats(action)
        if error is None or isinstance(error, InvalidCallResult):
            stats.results_in += 1
        elif type(error) is CallErrorReceived:
            stats.errors_in += 1
            code = error.code if error.code in _KNOWN_CODES else OTHER
            self._count_error("in", action, code)
        elif type(error) is CallTimeout:
            stats.timeouts += 1
            return
        elif isinstance(error, NotConnected):
            stats.lost += 1
            return
        stats.command.observe(seconds)

    def _count_error(self, direction: str, action: str | None, code: str) -> None:
        key = (direction, action or OTHER, str(code))
        self._call_errors[key] = self._call_errors.get(key, 0) + 1

    # ------------------------------------------------------------- store hook

    def group_committed(self, units: int, seconds: float) -> None:
        """``SqlStore.on_group_committed``: ``units`` committed together in ``seconds``."""
        self._unit_of_work.observe(seconds, units)  # each unit waited for this commit
        self._group_size.observe(units)

    def fsynced(self, seconds: float) -> None:
        """``SqlStore.on_fsync``: one fsync of the SQLite WAL took ``seconds``."""
        self._fsync.observe(seconds)

    # ----------------------------------------------------------------- scrape

    async def refresh(self, *, now: float | None = None) -> None:
        """Take the samples that need the database (before :meth:`render`)."""
        store = self._store
        if store is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._active_sampled_at < self.active_transactions_max_age:
            return
        try:
            self._active_transactions = await store.read(
                lambda repos: repos.transactions.count_active()
            )
        except Exception as exc:
            log.warning("could not count the active transactions", extra={"reason": repr(exc)})
            return
        self._active_sampled_at = now

    async def scrape(self) -> bytes:
        """The text exposition format of every metric (``GET /metrics``)."""
        await self.refresh()
        return self.render()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -------------------------------------------------------- metric families

    def families(self) -> Iterator[Metric]:
        connections = self._connections
        if connections is not None:
            connected = len(connections)
            queued = in_flight = 0
            for connection in connections:
                session = connection.session
                queued += session.queued
                if session.in_flight is not None:
                    in_flight += 1
            yield _gauge(
                "kilowatt_connected_charge_points",
                "Charge points connected to this process.",
                connected,
            )
            yield _gauge(
                "kilowatt_outgoing_calls_queued",
                "CALLs to charge points waiting behind the one on the wire, summed over "
                "the connections of this process.",
                queued,
            )
            yield _gauge(
                "kilowatt_outgoing_calls_in_flight",
                "CALLs to charge points on the wire, waiting for their answer.",
                in_flight,
            )
        if self._store is not None:
            yield _gauge(
                "kilowatt_db_pending_writes",
                "Units of work waiting for the next group commit.",
                self._store.pending_writes,
            )
            if self._active_transactions is not None:
                yield _gauge(
                    "kilowatt_active_transactions",
                    "Active transactions in the database (all charge points, every "
                    f"process; counted at most every {self.active_transactions_max_age:g} s).",
                    self._active_transactions,
                )
        message_log = self._message_log
        if message_log is not None:
            yield CounterMetricFamily(
                "kilowatt_message_log_frames_dropped",
                "Frames the message log lost: its buffer was full (the database fell "
                "behind), or its process stopped taking them.",
                value=message_log.dropped,
            )
            restarts = message_log.restarts
            if restarts is not None:  # written by a process of its own
                yield CounterMetricFamily(
                    "kilowatt_message_log_process_restarts",
                    "Times the message log's process was started again after it died "
                    "or stopped taking frames.",
                    value=restarts,
                )
        yield from self._ocpp_families()
        yield _histogram(
            "kilowatt_db_unit_of_work_seconds",
            "Commit latency of each unit of work: from the start of its group's database "
            "transaction to the commit (every unit of a group waits for the same commit).",
            self._unit_of_work,
        )
        yield _histogram(
            "kilowatt_db_group_commit_units",
            "Units of work committed together in one database transaction.",
            self._group_size,
        )
        yield _histogram(
            "kilowatt_db_fsync_seconds",
            "How long each fsync of the SQLite WAL took (synchronous=FULL; every write is "
            "answered after one). Not sampled on PostgreSQL, which syncs on its server.",
            self._fsync,
        )

    def _ocpp_families(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "kilowatt_ocpp_messages",
            "OCPP messages by action, direction (in: from the charge point) and type.",
            labels=["action", "direction", "type"],
        )
        handler = HistogramMetricFamily(
            "kilowatt_ocpp_handler_seconds",
            "Time from handing an incoming CALL to its handler to its answer (CALLRESULT or "
            "CALLERROR), database commit included.",
            labels=["action"],
        )
        command = HistogramMetricFamily(
            "kilowatt_ocpp_command_seconds",
            "Time from sending a CALL to a charge point to its answer.",
            labels=["action"],
        )
        timeouts = CounterMetricFamily(
            "kilowatt_ocpp_command_timeouts",
            "CALLs to charge points that got no answer in time.",
            labels=["action"],
        )
        lost = CounterMetricFamily(
            "kilowatt_ocpp_commands_lost",
            "CALLs to charge points whose connection closed before the answer.",
            labels=["action"],
        )
        for action, stats in self._all_actions():
            for direction, kind, count in (
                ("in", "CALL", stats.calls_in),
                ("out", "CALLRESULT", stats.results_out),
                ("out", "CALLERROR", stats.errors_out),
                ("out", "CALL", stats.calls_out),
                ("in", "CALLRESULT", stats.results_in),
                ("in", "CALLERROR", stats.errors_in),
            ):
                if count:
                    messages.add_metric([action, direction, kind], count)
            if stats.handler.total or stats.handler.count:
                handler.add_metric(
                    [action], stats.handler.cumulative(), sum_value=stats.handler.total
                )
            if stats.command.total or stats.command.count:
                command.add_metric(
                    [action], stats.command.cumulative(), sum_value=stats.command.total
                )
            if stats.timeouts:
                timeouts.add_metric([action], stats.timeouts)
            if stats.lost:
                lost.add_metric([action], stats.lost)
        errors = CounterMetricFamily(
            "kilowatt_ocpp_call_errors",
            "CALLERRORs by direction (out: ours, answering a charge point), action and code.",
            labels=["direction", "action", "code"],
        )
        for (direction, action, code), count in sorted(self._call_errors.items()):
            errors.add_metric([direction, action, code], count)
        yield from (messages, errors, handler, command, timeouts, lost)

    def _all_actions(self) -> Iterator[tuple[str, _Action]]:
        yield from sorted(self._actions.items())
        yield OTHER, self._other


class _Collector:
    """The registry's view of a :class:`Metrics` (collected at scrape time)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()

    def describe(self) -> list[Metric]:
        return []  # the series depend on the traffic; nothing to check up front


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _histogram(name: str, documentation: str, histogram: _Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=histogram.cumulative(), sum_value=histogram.total
    )


def _error_code(frame: bytes) -> str:
    """The errorCode of one of our CALLERROR frames (rare: parsing is fine)."""
    try:
        code = orjson.loads(frame)[2]
    except (orjson.JSONDecodeError, IndexError, TypeError):
        return OTHER
    return code if isinstance(code, str) and code in _KNOWN_CODES else OTHER
