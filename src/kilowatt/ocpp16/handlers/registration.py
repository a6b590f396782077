"""Only an accepted charge point is served; every message counts as a sign of life.

OCPP 1.6 §4.2.1: until its BootNotification is Accepted, a charge point has no
business sending anything else. A charge point the Central System has not accepted
(unknown, Pending or Rejected) gets ``SecurityError`` for anything but
BootNotification, so nothing is recorded for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kilowatt.protocol.errors import SecurityCallError
from kilowatt.protocol.router import CallContext, Handler, Inline

__all__ = ["require_acceptance"]

ALWAYS_ALLOWED = frozenset({"BootNotification"})
NOT_ACCEPTED = (
    "the charge point is not accepted by the Central System; "
    "send BootNotification (an operator may have to accept it first)"
)


def require_acceptance(
    routes: Mapping[str, Handler],
    *,
    is_accepted: Callable[[str], bool],
    seen: Callable[[str], None],
) -> dict[str, Handler]:
    def admit(allowed: bool, charge_point_id: str) -> None:
        if not allowed and not is_accepted(charge_point_id):
            raise SecurityCallError(NOT_ACCEPTED)
        seen(charge_point_id)

    def guard(action: str, handler: Handler) -> Handler:
        allowed = action in ALWAYS_ALLOWED
        if type(handler) is Inline:  # kept inline
            function = handler.function

            def guarded_inline(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
                admit(allowed, ctx.charge_point_id)
                return function(ctx, payload)

            return Inline(guarded_inline)

        async def guarded(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
            admit(allowed, ctx.charge_point_id)
            return await handler(ctx, payload)

        return guarded

    return {action: guard(action, handler) for action, handler in routes.items()}
