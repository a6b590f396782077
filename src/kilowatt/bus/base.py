"""How a CALL for a charge point reaches the process that holds its socket.

Single-process mode uses :class:`kilowatt.bus.local.LocalCommandBus`; cluster mode a
Redis-backed bus with the same interface, so services never know the difference.
Failures are the protocol's own exceptions (``kilowatt.protocol.errors``):
NotConnected, CallTimeout, CallErrorReceived, InvalidCallResult,
OutgoingValidationError.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["CommandBus"]


class CommandBus(Protocol):
    async def call(
        self,
        charge_point_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]: ...

    async def is_connected(self, charge_point_id: str) -> bool: ...
