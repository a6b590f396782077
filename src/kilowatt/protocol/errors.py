"""OCPP-J error codes and the exceptions that carry them.

Exception tree::

    OcppError                           base of everything this package raises
    ├── CallError                       becomes a CALLERROR frame; carries an ErrorCode
    │   ├── NotImplementedCallError     NotImplemented: action unknown to us
    │   ├── NotSupportedCallError       NotSupported: action known, not enabled here
    │   ├── FormationViolationError     FormationViolation: not a valid frame / PDU structure
    │   ├── ProtocolCallError           ProtocolError: payload incomplete
    │   ├── PropertyConstraintError     PropertyConstraintViolation: a field has an invalid value
    │   ├── OccurrenceConstraintError   OccurenceConstraintViolation (sic, the spec's spelling)
    │   ├── TypeConstraintError         TypeConstraintViolation: a field has the wrong data type
    │   ├── InternalCallError           InternalError: a handler raised
    │   ├── SecurityCallError           SecurityError
    │   └── GenericCallError            GenericError
    ├── OutgoingValidationError         a payload *we* built breaks the schema (never sent)
    └── CallFailed                      an outgoing CALL did not get a CALLRESULT
        ├── CallErrorReceived           the charge point answered CALLERROR
        ├── CallTimeout                 no answer before the deadline
        └── NotConnected                the connection closed (or was never there)

Names never shadow builtins (``NotImplementedCallError``, not ``NotImplementedError``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "CallError",
    "CallErrorReceived",
    "CallFailed",
    "CallTimeout",
    "ErrorCode",
    "FormationViolationError",
    "GenericCallError",
    "InternalCallError",
    "NotConnected",
    "NotImplementedCallError",
    "NotSupportedCallError",
    "OccurrenceConstraintError",
    "OcppError",
    "OutgoingValidationError",
    "PropertyConstraintError",
    "ProtocolCallError",
    "SecurityCallError",
    "TypeConstraintError",
    "call_error_for",
]


class ErrorCode(StrEnum):
    """CALLERROR codes of OCPP-J 1.6 §4.2.3, spelled exactly as on the wire."""

    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    INTERNAL_ERROR = "InternalError"
    PROTOCOL_ERROR = "ProtocolError"
    SECURITY_ERROR = "SecurityError"
    FORMATION_VIOLATION = "FormationViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    # The 1.6 specification misspells "Occurrence"; the wire name must follow it.
    OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
    GENERIC_ERROR = "GenericError"


class OcppError(Exception):
    """Base class of every error raised by the protocol core."""


class CallError(OcppError):
    """An error that is answered to the peer as a CALLERROR frame."""

    code: ErrorCode = ErrorCode.GENERIC_ERROR

    def __init__(self, description: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.details: dict[str, Any] = details if details is not None else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, {self.details!r})"


class NotImplementedCallError(CallError):
    code = ErrorCode.NOT_IMPLEMENTED


class NotSupportedCallError(CallError):
    code = ErrorCode.NOT_SUPPORTED


class FormationViolationError(CallError):
    code = ErrorCode.FORMATION_VIOLATION


class ProtocolCallError(CallError):
    code = ErrorCode.PROTOCOL_ERROR


class PropertyConstraintError(CallError):
    code = ErrorCode.PROPERTY_CONSTRAINT_VIOLATION


class OccurrenceConstraintError(CallError):
    code = ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION


class TypeConstraintError(CallError):
    code = ErrorCode.TYPE_CONSTRAINT_VIOLATION


class InternalCallError(CallError):
    code = ErrorCode.INTERNAL_ERROR


class SecurityCallError(CallError):
    code = ErrorCode.SECURITY_ERROR


class GenericCallError(CallError):
    code = ErrorCode.GENERIC_ERROR


_BY_CODE: dict[str, type[CallError]] = {
    cls.code.value: cls
    for cls in (
        NotImplementedCallError,
        NotSupportedCallError,
        FormationViolationError,
        ProtocolCallError,
        PropertyConstraintError,
        OccurrenceConstraintError,
        TypeConstraintError,
        InternalCallError,
        SecurityCallError,
        GenericCallError,
    )
}


def call_error_for(
    code: str, description: str = "", details: dict[str, Any] | None = None
) -> CallError:
    """The CallError subclass for a wire code (GenericError for a code the spec does not name)."""
    return _BY_CODE.get(code, GenericCallError)(description, details)


class OutgoingValidationError(OcppError):
    """A payload we were about to send does not conform to the schema.

    It is never put on the wire: a bug of ours must not reach a charge point.
    """

    def __init__(self, action: str, error: CallError) -> None:
        super().__init__(f"{action}: {error.description}")
        self.action = action
        self.error = error


class CallFailed(OcppError):
    """An outgoing CALL ended without a CALLRESULT."""


class CallErrorReceived(CallFailed):
    """The charge point answered our CALL with a CALLERROR."""

    def __init__(self, code: str, description: str, details: Any) -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description
        self.details = details


class CallTimeout(CallFailed):
    """No answer arrived before the call's deadline."""


class NotConnected(CallFailed):
    """The charge point is not connected (or the connection closed while waiting)."""
