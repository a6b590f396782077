"""The sans-I/O OCPP-J session of one connection: frames in, events and frames out.

It owns everything about a connection that is not I/O (OCPP-J 1.6 §4):

* parsing and validating every incoming frame, answering broken CALLs with the
  CallError the specification names, dropping what cannot be answered;
* the outgoing direction: at most one outstanding CALL (§4.1.1 "a Charge Point or
  Central System SHOULD NOT send a CALL message to the other party unless all the
  CALL messages it sent before have been responded to or have timed out"), a FIFO
  of the calls waiting behind it, correlation of answers by message id, deadlines
  computed from a ``now`` the caller passes in;
* the budget of broken frames one peer may send before it is cut off.

Nothing here reads a clock, sleeps, or touches a socket: the I/O shell
(``kilowatt.gateway.connection``) feeds text and time in and writes what comes out.
Incoming and outgoing directions are independent: a CALL from the peer may arrive
while our own CALL waits for its answer.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Container
from typing import Any

from kilowatt.protocol.errors import (
    CallError,
    CallErrorReceived,
    CallFailed,
    CallTimeout,
    NotConnected,
    NotImplementedCallError,
    NotSupportedCallError,
    OutgoingValidationError,
    TypeConstraintError,
)
from kilowatt.protocol.frames import (
    CALL,
    CALLERROR,
    CALLRESULT,
    Call,
    CallErrorFrame,
    CallResult,
    MalformedFrame,
    Undeliverable,
    build_call,
    build_call_error,
    build_call_result,
    parse_frame,
)
from kilowatt.protocol.validation import SchemaValidator

__all__ = [
    "Dropped",
    "Flooded",
    "InvalidCallResult",
    "PendingCall",
    "ProtocolSpec",
    "Rejected",
    "Session",
    "Settled",
]

RESPONSE_SUFFIX = "Response"


class ProtocolSpec:
    """What a protocol version contributes: its actions and their schemas.

    ``incoming`` lists the actions the peer may send us (request schema ``Action``,
    response schema ``ActionResponse``); ``outgoing`` those we may send it.
    """

    __slots__ = ("incoming", "known", "outgoing", "validator")

    def __init__(
        self, validator: SchemaValidator, incoming: frozenset[str], outgoing: frozenset[str]
    ) -> None:
        self.validator = validator
        self.incoming = incoming
        self.outgoing = outgoing
        self.known = incoming | outgoing


class InvalidCallResult(CallFailed):
    """The peer's CALLRESULT does not conform to the response schema."""

    def __init__(self, error: CallError) -> None:
        super().__init__(f"{error.code}: {error.description}")
        self.error = error


class PendingCall:
    """One outgoing CALL, queued or on the wire.

    ``context`` belongs to the I/O shell (it keeps the future of the waiter there).
    """

    __slots__ = ("action", "context", "deadline", "frame", "payload", "timeout", "unique_id")

    def __init__(
        self,
        unique_id: str,
        action: str,
        payload: dict[str, Any],
        frame: bytes,
        timeout: float,
        context: Any,
    ) -> None:
        self.unique_id = unique_id
        self.action = action
        self.payload = payload
        self.frame = frame
        self.timeout = timeout
        self.context = context
        self.deadline: float | None = None  # set when the frame goes on the wire

    def __repr__(self) -> str:
        return f"PendingCall({self.unique_id!r}, {self.action!r})"


class Settled:
    """An outgoing call ended: with ``result`` (the CALLRESULT payload) or ``error``.

    ``next_frame`` is the queued CALL that may now be sent (write it), if any.
    """

    __slots__ = ("call", "error", "next_frame", "result")

    def __init__(
        self,
        call: PendingCall,
        result: dict[str, Any] | None,
        error: CallFailed | None,
        next_frame: bytes | None,
    ) -> None:
        self.call = call
        self.result = result
        self.error = error
        self.next_frame = next_frame

    def __repr__(self) -> str:
        return f"Settled({self.call!r}, result={self.result!r}, error={self.error!r})"


class Rejected:
    """An incoming CALL was refused by the session; write ``frame`` (a CALLERROR)."""

    __slots__ = ("action", "error", "frame", "unique_id")

    def __init__(self, unique_id: str, action: str | None, error: CallError, frame: bytes) -> None:
        self.unique_id = unique_id
        self.action = action
        self.error = error
        self.frame = frame

    def __repr__(self) -> str:
        return f"Rejected({self.unique_id!r}, {self.action!r}, {self.error!r})"


class Dropped:
    """A frame that could not be answered was dropped; log ``reason``."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Dropped({self.reason!r})"


class Flooded:
    """The peer exceeded its budget of broken frames: close the connection."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Flooded({self.reason!r})"


Event = Call | Rejected | Settled | Dropped | Flooded


def _default_id_factory() -> Callable[[], str]:
    # A random prefix per session keeps a late answer meant for a previous
    # connection from matching a new call; the counter keeps ids short and cheap.
    prefix = secrets.token_hex(4)
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


class Session:
    """OCPP-J state of one connection. See the module docstring."""

    def __init__(
        self,
        spec: ProtocolSpec,
        *,
        handled: Container[str],
        call_timeout: float = 30.0,
        id_factory: Callable[[], str] | None = None,
        bad_frame_limit: int = 20,
        bad_frame_window: float = 10.0,
    ) -> None:
        self._spec = spec
        self._validate = spec.validator.validate
        self._incoming = spec.incoming
        self._known = spec.known
        self._handled = handled
        self.call_timeout = call_timeout
        self._next_id = id_factory or _default_id_factory()
        self._in_flight: PendingCall | None = None
        self._queue: deque[PendingCall] = deque()
        self._bad_frame_limit = bad_frame_limit
        self._bad_frame_window = bad_frame_window
        self._bad_frames = 0
        self._bad_window_start = 0.0
        self.closed = False

    # ---------------------------------------------------------------- incoming

    def receive(self, data: bytes | str, now: float) -> Event:
        """Take one WebSocket text message; say what it means.

        * :class:`Call` — a valid CALL of an action we handle: route it, then answer
          with :meth:`result_frame` or :meth:`error_frame`;
        * :class:`Rejected` — a broken or unsupported CALL: write its frame;
        * :class:`Settled` — an answer to our outgoing CALL;
        * :class:`Dropped` — nothing to answer, log it;
        * :class:`Flooded` — too many broken frames: close the connection.
        """
        try:
            frame = parse_frame(data)
        except Undeliverable as exc:
            return self._bad(now, Dropped(exc.reason))
        except MalformedFrame as exc:
            if exc.message_type in (CALLRESULT, CALLERROR):
                # An answer is never answered; a broken one fails the call it answers.
                return self._bad(now, self._broken_answer(exc, now))
            if exc.message_type != CALL:
                # OCPP-J 1.6 §4.1.3: a message type number not in the list SHALL be
                # ignored.
                return self._bad(now, Dropped(f"unknown message type: {exc.error.description}"))
            return self._bad(now, self._reject(exc.unique_id, None, exc.error))
        if type(frame) is Call:
            action = frame.action
            if action not in self._incoming:
                if action in self._known:
                    # OCPP-J §4.2.3: recognised, but not one this side receives.
                    return self._reject(
                        frame.unique_id,
                        action,
                        NotSupportedCallError(f"{action} is not sent to a Central System"),
                    )
                return self._bad(
                    now,
                    self._reject(
                        frame.unique_id,
                        action,
                        NotImplementedCallError(f"unknown action {action!r}"),
                    ),
                )
            if action not in self._handled:
                return self._reject(
                    frame.unique_id, action, NotSupportedCallError(f"{action} is not enabled")
                )
            try:
                self._validate(action, frame.payload)
            except CallError as error:
                return self._bad(now, self._reject(frame.unique_id, action, error))
            return frame
        if type(frame) is CallResult:
            return self._settle_result(frame, now)
        assert type(frame) is CallErrorFrame
        return self._settle_error(frame, now)

    def receive_binary(self, now: float) -> Event:
        """A binary WebSocket message: OCPP-J 1.6 §3 uses text frames only."""
        return self._bad(now, Dropped("binary WebSocket message; OCPP-J uses text frames"))

    def _bad(self, now: float, event: Event) -> Event:
        if now - self._bad_window_start > self._bad_frame_window:
            self._bad_window_start = now
            self._bad_frames = 0
        self._bad_frames += 1
        if self._bad_frames > self._bad_frame_limit:
            return Flooded(
                f"more than {self._bad_frame_limit} invalid frames in {self._bad_frame_window:g} s"
            )
        return event

    def _reject(self, unique_id: str, action: str | None, error: CallError) -> Rejected:
        return Rejected(unique_id, action, error, self.error_frame(unique_id, error))

    def _take_in_flight(self, unique_id: str) -> PendingCall | None:
        pending = self._in_flight
        if pending is None or pending.unique_id != unique_id:
            return None
        self._in_flight = None
        return pending

    def _settle_result(self, frame: CallResult, now: float) -> Event:
        pending = self._take_in_flight(frame.unique_id)
        if pending is None:
            return Dropped(f"CALLRESULT for unknown or expired message id {frame.unique_id!r}")
        try:
            self._validate(pending.action + RESPONSE_SUFFIX, frame.payload)
        except CallError as error:
            return Settled(pending, None, InvalidCallResult(error), self._send_next(now))
        return Settled(pending, frame.payload, None, self._send_next(now))

    def _settle_error(self, frame: CallErrorFrame, now: float) -> Event:
        pending = self._take_in_flight(frame.unique_id)
        if pending is None:
            return Dropped(f"CALLERROR for unknown or expired message id {frame.unique_id!r}")
        error = CallErrorReceived(frame.code, frame.description, frame.details)
        return Settled(pending, None, error, self._send_next(now))

    def _broken_answer(self, exc: MalformedFrame, now: float) -> Event:
        pending = self._in_flight
        if pending is not None and pending.unique_id == exc.unique_id:
            self._in_flight = None
            failure = InvalidCallResult(exc.error)
            # The slot is free again; the next queued call goes out at once.
            return Settled(pending, None, failure, self._send_next(now))
        return Dropped(f"malformed frame for message id {exc.unique_id!r}: {exc.error.description}")

    # ----------------------------------------------------------- our answers

    def result_frame(self, call: Call, payload: dict[str, Any]) -> bytes:
        """The CALLRESULT answering ``call``; raises OutgoingValidationError if invalid."""
        action = call.action
        try:
            self._validate(action + RESPONSE_SUFFIX, payload)
        except CallError as error:
            raise OutgoingValidationError(action + RESPONSE_SUFFIX, error) from None
        return build_call_result(call.unique_id, payload)

    @staticmethod
    def error_frame(unique_id: str, error: CallError) -> bytes:
        return build_call_error(unique_id, error.code, error.description, error.details)

    # -------------------------------------------------------- outgoing calls

    def call(
        self,
        action: str,
        payload: dict[str, Any],
        now: float,
        *,
        timeout: float | None = None,
        context: Any = None,
    ) -> tuple[PendingCall, bytes | None]:
        """Queue a CALL to the peer.

        Returns the pending call and the frame to write now, or ``None`` when another
        call is outstanding (the frame comes out of a later :class:`Settled`).
        Raises OutgoingValidationError for an invalid payload, NotConnected once closed.
        """
        if self.closed:
            raise NotConnected("the connection is closed")
        if action not in self._spec.outgoing:
            error = NotImplementedCallError(f"{action} is not an action sent to a charge point")
            raise OutgoingValidationError(action, error)
        try:
            self._validate(action, payload)
        except CallError as error:
            raise OutgoingValidationError(action, error) from None
        unique_id = self._next_id()
        try:
            frame = build_call(unique_id, action, payload)
        except TypeError as exc:
            # Valid by the schema, but not JSON: an integer beyond 64 bits, a lone
            # surrogate in a string.
            failure = TypeConstraintError(f"the payload cannot be sent as JSON: {exc}")
            raise OutgoingValidationError(action, failure) from None
        pending = PendingCall(
            unique_id,
            action,
            payload,
            frame,
            self.call_timeout if timeout is None else timeout,
            context,
        )
        if self._in_flight is None:
            return pending, self._put_on_wire(pending, now)
        self._queue.append(pending)
        return pending, None

    def _put_on_wire(self, pending: PendingCall, now: float) -> bytes:
        pending.deadline = now + pending.timeout
        self._in_flight = pending
        return pending.frame

    def _send_next(self, now: float) -> bytes | None:
        if self._queue and not self.closed:
            return self._put_on_wire(self._queue.popleft(), now)
        return None

    def cancel(self, pending: PendingCall) -> bool:
        """Withdraw a call that is still queued. A call on the wire stays outstanding
        until answered or timed out (the one-outstanding rule still holds for it)."""
        try:
            self._queue.remove(pending)
        except ValueError:
            return False
        return True

    @property
    def in_flight(self) -> PendingCall | None:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._queue)

    def next_deadline(self) -> float | None:
        pending = self._in_flight
        return None if pending is None else pending.deadline

    def expire(self, now: float) -> Settled | None:
        """Fail the outstanding call if its deadline has passed."""
        pending = self._in_flight
        if pending is None or pending.deadline is None or pending.deadline > now:
            return None
        self._in_flight = None
        error = CallTimeout(f"{pending.action}: no answer within {pending.timeout:g} s")
        return Settled(pending, None, error, self._send_next(now))

    def close(self, reason: str = "the connection closed") -> list[Settled]:
        """Fail every outstanding and queued call at once."""
        self.closed = True
        failed: list[PendingCall] = []
        if self._in_flight is not None:
            failed.append(self._in_flight)
            self._in_flight = None
        failed.extend(self._queue)
        self._queue.clear()
        return [Settled(p, None, NotConnected(reason), None) for p in failed]
