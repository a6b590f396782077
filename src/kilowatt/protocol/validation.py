"""Payload validation against JSON schemas, compiled once, run synchronously.

The schemas themselves come from the version package (``kilowatt.ocpp16.schemas``);
this module only compiles them (fastjsonschema generates plain Python code, a few
microseconds per message, no thread pool), puts the generated fast path of
:mod:`kilowatt.protocol.fastpath` in front (a valid payload is passed in about a
third of that time) and turns a schema failure into the
CallError the OCPP-J specification names for it (OCPP-J 1.6 §4.2.3):

==========================  ==================================================
schema rule                 CallError code
==========================  ==================================================
``type``, ``maxLength``     TypeConstraintViolation (``CiString20Type`` &c are
                            data types: too long is a type violation)
``required``                ProtocolError ("payload for Action is incomplete")
``additionalProperties``    FormationViolation (not conform the PDU structure)
``minItems``, ``maxItems``  OccurenceConstraintViolation (cardinality)
anything else (``enum``,    PropertyConstraintViolation (syntactically correct,
``format``, ``minimum`` …)  but a field holds an invalid value)
==========================  ==================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

from kilowatt.protocol.errors import (
    CallError,
    FormationViolationError,
    OccurrenceConstraintError,
    PropertyConstraintError,
    ProtocolCallError,
    TypeConstraintError,
)
from kilowatt.protocol.fastpath import with_fast_path

__all__ = ["SchemaValidator", "error_for_rule"]

Check = Callable[[Any], Any]

_RULE_ERRORS: dict[str, type[CallError]] = {
    "type": TypeConstraintError,
    "maxLength": TypeConstraintError,
    "required": ProtocolCallError,
    "additionalProperties": FormationViolationError,
    "minItems": OccurrenceConstraintError,
    "maxItems": OccurrenceConstraintError,
}


def error_for_rule(rule: str | None) -> type[CallError]:
    """The CallError class for a failed JSON-schema rule (see the module table)."""
    return _RULE_ERRORS.get(rule or "", PropertyConstraintError)


def _rename_root(name: str) -> str:
    # fastjsonschema names the root "data"; the peer knows it as the payload.
    return "payload" + name[4:] if name.startswith("data") else name


class SchemaValidator:
    """Validates payloads by schema name; each schema is compiled on first use, once.

    ``schemas`` maps a name (``"BootNotification"``, ``"BootNotificationResponse"``)
    to a loader of the schema document, so that start-up does not pay for schemas
    that are never used; :meth:`compile_all` does it eagerly.
    """

    __slots__ = ("_checks", "_loaders")

    def __init__(self, schemas: Mapping[str, Callable[[], dict[str, Any]]]) -> None:
        self._loaders = dict(schemas)
        self._checks: dict[str, Check] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._loaders

    def names(self) -> frozenset[str]:
        return frozenset(self._loaders)

    def compile_all(self) -> None:
        for name in self._loaders:
            self._check(name)

    def _check(self, name: str) -> Check:
        check = self._checks.get(name)
        if check is None:
            schema = self._loaders[name]()
            check = with_fast_path(schema, fastjsonschema.compile(schema))
            self._checks[name] = check
        return check

    def validate(self, name: str, payload: Any) -> None:
        """Raise the matching :class:`CallError` if ``payload`` breaks schema ``name``.

        ``KeyError`` if no schema of that name exists (callers check membership first).
        """
        try:
            (self._checks.get(name) or self._check(name))(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            where = _rename_root(str(exc.name or "data"))
            message = str(exc.message or "").replace(str(exc.name), where, 1)
            raise error_for_rule(exc.rule)(message, {"path": where, "rule": exc.rule}) from None
        except (ValueError, OverflowError, TypeError) as exc:
            # Compiled checks such as multipleOf fail this way on NaN or infinity, which
            # lenient JSON parsers (not ours) let through.
            raise PropertyConstraintError(
                f"payload holds a value that is not a finite JSON number: {exc}",
                {"path": "payload", "rule": "number"},
            ) from None
