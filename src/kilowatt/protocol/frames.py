"""OCPP-J frames (OCPP-J 1.6 §4): parse text into typed frames, build frames from values.

A frame is a JSON array whose first element is the message type:

* CALL        ``[2, "<UniqueId>", "<Action>", {<payload>}]``
* CALLRESULT  ``[3, "<UniqueId>", {<payload>}]``
* CALLERROR   ``[4, "<UniqueId>", "<errorCode>", "<errorDescription>", {<errorDetails>}]``

Parsing never raises anything but :class:`Undeliverable` (no usable message id: the
frame can only be logged and dropped) and :class:`MalformedFrame` (a usable id, a
broken frame: a CALL gets a CALLERROR, a broken answer fails the call it answers).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from kilowatt.protocol.errors import CallError, FormationViolationError

__all__ = [
    "CALL",
    "CALLERROR",
    "CALLRESULT",
    "MAX_UNIQUE_ID_LENGTH",
    "Call",
    "CallErrorFrame",
    "CallResult",
    "Frame",
    "MalformedFrame",
    "Undeliverable",
    "build_call",
    "build_call_error",
    "build_call_result",
    "parse_frame",
]

CALL: Final = 2
CALLRESULT: Final = 3
CALLERROR: Final = 4

# OCPP-J 1.6 §4.1.3: "UniqueId ... maximum of 36 characters".
MAX_UNIQUE_ID_LENGTH: Final = 36


class Call:
    __slots__ = ("action", "payload", "unique_id")

    def __init__(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        self.unique_id = unique_id
        self.action = action
        self.payload = payload

    def __repr__(self) -> str:
        return f"Call({self.unique_id!r}, {self.action!r}, {self.payload!r})"


class CallResult:
    __slots__ = ("payload", "unique_id")

    def __init__(self, unique_id: str, payload: dict[str, Any]) -> None:
        self.unique_id = unique_id
        self.payload = payload

    def __repr__(self) -> str:
        return f"CallResult({self.unique_id!r}, {self.payload!r})"


class CallErrorFrame:
    __slots__ = ("code", "description", "details", "unique_id")

    def __init__(self, unique_id: str, code: str, description: str, details: Any) -> None:
        self.unique_id = unique_id
        self.code = code
        self.description = description
        self.details = details

    def __repr__(self) -> str:
        return (
            f"CallErrorFrame({self.unique_id!r}, {self.code!r}, "
            f"{self.description!r}, {self.details!r})"
        )


Frame = Call | CallResult | CallErrorFrame


class Undeliverable(Exception):
    """Not JSON, not an array, or no usable message id: there is nobody to answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedFrame(Exception):
    """The frame has a usable message id but is otherwise broken."""

    def __init__(self, unique_id: str, message_type: object, error: CallError) -> None:
        super().__init__(error.description)
        self.unique_id = unique_id
        self.message_type = message_type
        self.error = error


def _malformed(unique_id: str, message_type: object, description: str) -> MalformedFrame:
    return MalformedFrame(unique_id, message_type, FormationViolationError(description))


def parse_frame(data: bytes | str) -> Frame:
    """Parse one WebSocket text message into a frame (see the module docstring)."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Undeliverable(f"not valid JSON: {exc}") from None
    if type(message) is not list or len(message) < 2:
        raise Undeliverable("not a JSON array of at least [MessageTypeId, UniqueId]")
    message_type = message[0]
    unique_id = message[1]
    if type(unique_id) is not str:
        raise Undeliverable("the UniqueId is not a string")
    if not unique_id or len(unique_id) > MAX_UNIQUE_ID_LENGTH:
        raise _malformed(
            unique_id, message_type, f"UniqueId must be 1 to {MAX_UNIQUE_ID_LENGTH} characters"
        )
    size = len(message)
    # ``type(x) is int`` keeps booleans out: ``true`` is not a MessageTypeId.
    if message_type == CALL and type(message_type) is int:
        if size != 4:
            raise _malformed(unique_id, CALL, "a CALL has exactly 4 elements")
        action = message[2]
        payload = message[3]
        if type(action) is not str or not action:
            raise _malformed(unique_id, CALL, "the Action is not a non-empty string")
        if type(payload) is not dict:
            raise _malformed(unique_id, CALL, "the payload is not a JSON object")
        return Call(unique_id, action, payload)
    if message_type == CALLRESULT and type(message_type) is int:
        if size != 3:
            raise _malformed(unique_id, CALLRESULT, "a CALLRESULT has exactly 3 elements")
        payload = message[2]
        if type(payload) is not dict:
            raise _malformed(unique_id, CALLRESULT, "the payload is not a JSON object")
        return CallResult(unique_id, payload)
    if message_type == CALLERROR and type(message_type) is int:
        if size != 5:
            raise _malformed(unique_id, CALLERROR, "a CALLERROR has exactly 5 elements")
        code, description, details = message[2], message[3], message[4]
        if type(code) is not str or type(description) is not str or type(details) is not dict:
            raise _malformed(
                unique_id,
                CALLERROR,
                "a CALLERROR is [4, UniqueId, errorCode, errorDescription, {errorDetails}]",
            )
        return CallErrorFrame(unique_id, code, description, details)
    raise _malformed(unique_id, message_type, f"unknown MessageTypeId {message_type!r}")


def build_call(unique_id: str, action: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALL, unique_id, action, payload])


def build_call_result(unique_id: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALLRESULT, unique_id, payload])


def build_call_error(
    unique_id: str, code: str, description: str = "", details: dict[str, Any] | None = None
) -> bytes:
    return orjson.dumps([CALLERROR, unique_id, code, description, details or {}])
