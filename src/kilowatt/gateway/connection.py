"""The I/O shell around one charge point's WebSocket.

The WebSocket pushes every received message into :meth:`ChargePointConnection.message_received`,
which feeds it into the sans-I/O :class:`Session` and writes what the session says to
write, synchronously; handlers run in a task, and outgoing calls become awaitables:

* incoming CALLs are handled one at a time, in arrival order, in a task (so a
  handler may itself await a call to the same charge point: messages keep coming
  in meanwhile, and the CALLRESULT it waits for gets through);
* outgoing CALLs are correlated by message id through a future kept on the pending
  call; the session keeps at most one on the wire (OCPP-J 1.6 §4.1.1);
* when the socket closes, every waiter fails at once with NotConnected — nobody
  waits out a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping
from time import perf_counter
from typing import Any, Protocol

from kilowatt.protocol.errors import (
    CallError,
    GenericCallError,
    InternalCallError,
    NotConnected,
    OutgoingValidationError,
)
from kilowatt.protocol.frames import Call
from kilowatt.protocol.router import Handler, Inline
from kilowatt.protocol.session import Dropped, Flooded, PendingCall, Rejected, Session, Settled

__all__ = [
    "ChargePointConnection",
    "ConnectionMetrics",
    "ConnectionObserver",
    "FanOutObserver",
    "Transport",
    "combine_observers",
]

# Python ≥ 3.12: a handler's task takes its first step at once, inside
# message_received, rather than at the event loop's next turn. A handler that does not
# wait is answered there and then; one that writes queues its unit of work a turn
# sooner. It is a task from its first step all the same (asyncio.current_task(), and
# so asyncio.timeout, work). Python 3.11 has no eager start: the task waits its turn.
_EAGER_START: dict[str, Any] = {"eager_start": True} if sys.version_info >= (3, 12) else {}

log = logging.getLogger("kilowatt.gateway")

# OCPP-J §4.1.1 allows one outstanding CALL per direction; we are lenient and queue
# a few pipelined CALLs (handled strictly in order), answering GenericError beyond.
MAX_QUEUED_INCOMING = 8

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008


class Transport(Protocol):
    """The part of a WebSocket connection the shell uses.

    Messages come the other way, pushed by the WebSocket into
    :meth:`ChargePointConnection.message_received` until it calls
    :meth:`ChargePointConnection.connection_closed`.
    """

    def send_text(self, frame: bytes) -> None:
        """Write a text message now; never blocks, never raises (dropped once closed)."""

    def close(self, code: int, reason: str) -> Awaitable[None]:
        """Start the closing handshake; the awaitable completes once it is over."""


class ConnectionObserver(Protocol):
    """Hooks for the message log, metrics and events (all optional to implement)."""

    def frame_received(self, charge_point_id: str, data: str | bytes) -> None: ...

    def frame_sent(self, charge_point_id: str, data: bytes) -> None: ...


class FanOutObserver:
    """Several observers behind one: each is told about every frame, in order."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Iterable[ConnectionObserver]) -> None:
        self._observers = tuple(observers)

    def frame_received(self, charge_point_id: str, data: str | bytes) -> None:
        for observer in self._observers:
            observer.frame_received(charge_point_id, data)

    def frame_sent(self, charge_point_id: str, data: bytes) -> None:
        for observer in self._observers:
            observer.frame_sent(charge_point_id, data)


def combine_observers(*observers: ConnectionObserver | None) -> ConnectionObserver | None:
    """One observer for the connections: None, the only one itself (no fan-out cost),
    or a :class:`FanOutObserver` of several. ``None`` entries are left out."""
    present = [observer for observer in observers if observer is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return FanOutObserver(present)


class ConnectionMetrics(Protocol):
    """Per-call measurements (``kilowatt.metrics``), called on the hot path: keep cheap."""

    def call_handled(self, charge_point_id: str, action: str, frame: bytes, seconds: float) -> None:
        """An incoming CALL was answered with ``frame`` (CALLRESULT or CALLERROR)."""

    def call_refused(self, charge_point_id: str, action: str | None, code: str) -> None:
        """An incoming CALL was answered with a CALLERROR without reaching a handler."""

    def command_sent(self, charge_point_id: str, action: str) -> None:
        """We queued a CALL to the charge point."""

    def command_settled(
        self, charge_point_id: str, action: str, seconds: float, error: Exception | None
    ) -> None:
        """Our CALL ended: answered (``error`` None or CallErrorReceived/InvalidCallResult),
        timed out (CallTimeout) or lost with the connection (NotConnected)."""


class _Context:
    __slots__ = ("action", "charge_point_id", "connection", "unique_id")

    def __init__(self, connection: ChargePointConnection, call: Call) -> None:
        self.connection = connection
        self.charge_point_id = connection.charge_point_id
        self.unique_id = call.unique_id
        self.action = call.action


class ChargePointConnection:
    """One live connection of one charge point."""

    def __init__(
        self,
        charge_point_id: str,
        transport: Transport,
        session: Session,
        routes: Mapping[str, Handler],
        *,
        strict: bool = False,
        observer: ConnectionObserver | None = None,
        metrics: ConnectionMetrics | None = None,
    ) -> None:
        self.charge_point_id = charge_point_id
        self.transport = transport
        self.session = session
        self._routes = routes
        self._strict = strict
        self._observer = observer
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._incoming: deque[Call] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for: PendingCall | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self.closed = asyncio.Event()

    # ------------------------------------------------------------ messages

    async def run(self) -> None:
        """Serve until the WebSocket closes (its messages are pushed to us meanwhile)."""
        await self.closed.wait()

    def connection_closed(self) -> None:
        """The WebSocket is closing or gone: fail everything still waiting, at once."""
        self._shutdown("the charge point disconnected")

    def message_received(self, data: str | bytes) -> None:
        """One WebSocket message, handled synchronously (a CALL's handler is started)."""
        observer = self._observer
        if observer is not None:
            observer.frame_received(self.charge_point_id, data)
        if type(data) is str:
            event: Any = self.session.receive(data, self._loop.time())
        else:
            event = self.session.receive_binary(self._loop.time())
        kind = type(event)
        if kind is Call:
            self._accept_call(event)
        elif kind is Settled:
            self._settle(event)
        elif kind is Rejected:
            if self._metrics is not None:
                self._metrics.call_refused(self.charge_point_id, event.action, event.error.code)
            log.info(
                "call rejected",
                extra={
                    "charge_point": self.charge_point_id,
                    "action": event.action,
                    "code": str(event.error.code),
                    "reason": event.error.description,
                },
            )
            self._write(event.frame)
        elif kind is Dropped:
            log.warning(
                "frame dropped",
                extra={"charge_point": self.charge_point_id, "reason": event.reason},
            )
        elif kind is Flooded:
            log.warning(
                "connection closed: invalid frame flood",
                extra={"charge_point": self.charge_point_id, "reason": event.reason},
            )
            # The close frame goes out now; its handshake completes in the background.
            self._keep(self.transport.close(CLOSE_POLICY_VIOLATION, "too many invalid frames"))

    # -------------------------------------------------------- incoming calls

    def _accept_call(self, call: Call) -> None:
        if len(self._incoming) >= MAX_QUEUED_INCOMING:
            error = GenericCallError(
                "too many CALLs outstanding; OCPP-J 1.6 §4.1.1 allows one at a time"
            )
            if self._metrics is not None:
                self._metrics.call_refused(self.charge_point_id, call.action, error.code)
            self._write(self.session.error_frame(call.unique_id, error))
            return
        if self._worker is None:
            handler = self._routes[call.action]
            if type(handler) is Inline:  # nothing queued ahead of it: answered now
                started = perf_counter() if self._metrics is not None else 0.0
                try:
                    frame = self._result(call, handler.function(_Context(self, call), call.payload))
                except Exception as exc:
                    frame = self._failure(call, exc)
                self._send_answer(call, frame, started)
                return
            self._incoming.append(call)
            worker = asyncio.Task(self._handle_incoming(), loop=self._loop, **_EAGER_START)
            if not worker.done():  # started eagerly, it may have answered already
                self._worker = worker
            return
        self._incoming.append(call)

    async def _handle_incoming(self) -> None:
        try:
            while self._incoming:
                call = self._incoming[0]
                started = perf_counter() if self._metrics is not None else 0.0
                try:
                    answer = await self._routes[call.action](_Context(self, call), call.payload)
                    frame = self._result(call, answer)
                except Exception as exc:
                    frame = self._failure(call, exc)
                self._incoming.popleft()
                self._send_answer(call, frame, started)
        finally:
            self._worker = None

    def _send_answer(self, call: Call, frame: bytes, started: float) -> None:
        if self._metrics is not None:
            self._metrics.call_handled(
                self.charge_point_id, call.action, frame, perf_counter() - started
            )
        self._write(frame)

    def _result(self, call: Call, result: dict[str, Any]) -> bytes:
        frame = self.session.result_frame(call, result)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "call answered",
                extra={
                    "charge_point": self.charge_point_id,
                    "action": call.action,
                    "unique_id": call.unique_id,
                },
            )
        return frame

    def _failure(self, call: Call, exc: Exception) -> bytes:
        """The CALLERROR for a handler (or its answer) that failed with ``exc``."""
        if isinstance(exc, CallError):
            return self.session.error_frame(call.unique_id, exc)
        if isinstance(exc, OutgoingValidationError):
            log.error(
                "invalid answer not sent",
                extra={
                    "charge_point": self.charge_point_id,
                    "action": exc.action,
                    "reason": exc.error.description,
                },
            )
            if self._strict:
                raise exc
            return self.session.error_frame(
                call.unique_id, InternalCallError("the Central System could not build an answer")
            )
        log.error(
            "handler failed",
            exc_info=exc,
            extra={"charge_point": self.charge_point_id, "action": call.action},
        )
        return self.session.error_frame(
            call.unique_id, InternalCallError(f"{call.action} could not be processed")
        )

    async def wait_idle(self) -> None:
        """Wait until the calls already received have been answered."""
        worker = self._worker
        if worker is not None:
            await asyncio.shield(worker)

    # -------------------------------------------------------- outgoing calls

    async def call(
        self, action: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload.

        Raises OutgoingValidationError (invalid payload; nothing sent),
        CallErrorReceived, CallTimeout, InvalidCallResult or NotConnected.
        """
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        pending, frame = self.session.call(
            action, payload, self._loop.time(), timeout=timeout, context=future
        )
        if self._metrics is not None:
            self._metrics.command_sent(self.charge_point_id, action)
        if frame is not None:
            self._on_wire(pending)
            self._write(frame)
        try:
            return await future
        except asyncio.CancelledError:
            self.session.cancel(pending)
            raise

    def _on_wire(self, pending: PendingCall) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_for = pending
        deadline = pending.deadline
        assert deadline is not None
        self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        settled = self.session.expire(now)
        if settled is not None:
            self._settle(settled)
            return
        pending = self.session.in_flight
        if pending is not None and pending.deadline is not None:
            # Event loops round timers (uvloop to whole milliseconds) and may wake
            # us a hair early: arm again for what is left.
            self._timer_for = pending
            self._timer = self._loop.call_later(max(pending.deadline - now, 0.001), self._expire)

    def _settle(self, settled: Settled) -> None:
        if self._timer_for is settled.call and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._metrics is not None:
            self._measure(settled)
        future: asyncio.Future[dict[str, Any]] | None = settled.call.context
        if future is not None and not future.done():
            if settled.error is not None:
                future.set_exception(settled.error)
            else:
                assert settled.result is not None
                future.set_result(settled.result)
        if settled.next_frame is not None:
            in_flight = self.session.in_flight
            assert in_flight is not None
            self._on_wire(in_flight)
            self._write(settled.next_frame)

    def _measure(self, settled: Settled) -> None:
        assert self._metrics is not None
        pending = settled.call
        # On the wire since deadline - timeout (loop time); never sent: no latency.
        sent = None if pending.deadline is None else pending.deadline - pending.timeout
        seconds = 0.0 if sent is None else self._loop.time() - sent
        self._metrics.command_settled(self.charge_point_id, pending.action, seconds, settled.error)

    # ------------------------------------------------------------------ I/O

    def _write(self, frame: bytes) -> None:
        observer = self._observer
        if observer is not None:
            observer.frame_sent(self.charge_point_id, frame)
        self.transport.send_text(frame)

    def _keep(self, awaitable: Awaitable[Any]) -> None:
        """Let ``awaitable`` finish in the background, holding a reference to it."""
        future = asyncio.ensure_future(awaitable)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    def _shutdown(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for settled in self.session.close(reason):
            if self._metrics is not None:
                self._measure(settled)
            future: asyncio.Future[dict[str, Any]] | None = settled.call.context
            if future is not None and not future.done():
                future.set_exception(settled.error or NotConnected(reason))
        self.closed.set()

    async def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Close the WebSocket with ``code``; returns once the closing handshake is over."""
        await self.transport.close(code, reason)
