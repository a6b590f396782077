"""Remote control: CALLs from the Central System to a charge point.

Every CS→CP action of OCPP 1.6 and the Security Whitepaper goes through
:meth:`CommandService.call`: the payload is validated against the official schema
before anything is sent, the charge point must be registered, and the CALL travels
over the command bus to whichever process holds the socket. Features that keep
server-side state for an action (reservations, local lists, charging profiles,
firmware, certificates) register an *interceptor* for it, so that the database
always knows what was asked and what the charge point answered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kilowatt.bus.base import CommandBus
from kilowatt.protocol.errors import CallError
from kilowatt.protocol.validation import SchemaValidator
from kilowatt.store.base import Store

__all__ = [
    "CommandService",
    "Interceptor",
    "InvalidPayload",
    "UnknownAction",
    "UnknownChargePoint",
]

log = logging.getLogger("kilowatt.commands")

Send = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Interceptor = Callable[[str, dict[str, Any], Send], Awaitable[dict[str, Any]]]
"""``interceptor(charge_point_id, payload, send) -> result``: wraps the real send."""


class UnknownAction(Exception):
    """Not an action the Central System sends to a charge point."""


class UnknownChargePoint(Exception):
    """No charge point with that id is registered."""


class InvalidPayload(Exception):
    def __init__(self, action: str, error: CallError) -> None:
        super().__init__(f"{action}: {error.description}")
        self.action = action
        self.error = error


class CommandService:
    def __init__(
        self,
        store: Store,
        bus: CommandBus,
        validator: SchemaValidator,
        actions: frozenset[str],
        *,
        default_timeout: float,
    ) -> None:
        self._store = store
        self._bus = bus
        self._validator = validator
        self.actions = actions
        self.default_timeout = default_timeout
        self._interceptors: dict[str, Interceptor] = {}

    def intercept(self, action: str, interceptor: Interceptor) -> None:
        if action in self._interceptors:
            raise ValueError(f"{action} is intercepted already")
        self._interceptors[action] = interceptor

    def validate(self, action: str, payload: dict[str, Any]) -> None:
        if action not in self.actions:
            raise UnknownAction(action)
        try:
            self._validator.validate(action, payload)
        except CallError as error:
            raise InvalidPayload(action, error) from None

    async def call(
        self,
        charge_point_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send ``action`` to the charge point; return its CALLRESULT payload.

        Raises UnknownAction, InvalidPayload, UnknownChargePoint, or what the bus
        raises (NotConnected, CallTimeout, CallErrorReceived, InvalidCallResult).
        """
        self.validate(action, payload)
        known = await self._store.read(lambda repos: repos.charge_points.get(charge_point_id))
        if known is None:
            raise UnknownChargePoint(charge_point_id)
        effective = self.default_timeout if timeout is None else timeout

        async def send(body: dict[str, Any]) -> dict[str, Any]:
            self.validate(action, body)
            return await self._bus.call(charge_point_id, action, body, timeout=effective)

        interceptor = self._interceptors.get(action)
        log.info("call sent", extra={"charge_point": charge_point_id, "action": action})
        if interceptor is not None:
            return await interceptor(charge_point_id, payload, send)
        return await send(payload)

    async def is_connected(self, charge_point_id: str) -> bool:
        return await self._bus.is_connected(charge_point_id)
