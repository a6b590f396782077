"""Optional OpenTelemetry tracing (setting ``tracing``, default off).

When it is on, every incoming CALL is handled inside a span ``OCPP <Action>`` and
every CALL sent to a charge point is a span ``OCPP <Action> (to charge point)``, with
the charge point id and the message id as attributes. Spans go to the tracer provider
configured the OpenTelemetry way (e.g. ``opentelemetry-instrument kilowatt serve`` and
the ``OTEL_*`` environment variables); Kilowatt only needs ``opentelemetry-api``
and does not depend on it: with ``tracing`` on and no OpenTelemetry installed, the
configuration is refused at start (:func:`check_tracing_available`).

Off, it costs nothing: the handlers and the command bus are wrapped when the
application is composed, not checked per message.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from kilowatt import __version__
from kilowatt.bus.base import CommandBus
from kilowatt.protocol.router import CallContext, Handler

__all__ = [
    "TRACING_UNAVAILABLE",
    "TracedCommandBus",
    "TracingUnavailable",
    "check_tracing_available",
    "load_tracer",
    "traced_routes",
]

TRACING_UNAVAILABLE = (
    "tracing is on but OpenTelemetry is not installed: install it "
    "(pip install opentelemetry-api opentelemetry-sdk, plus an exporter) or turn tracing "
    "off (KILOWATT_TRACING=false)"
)


class TracingUnavailable(RuntimeError):
    """``tracing`` is on and OpenTelemetry cannot be imported."""


def _trace_module() -> Any:
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError as exc:
        raise TracingUnavailable(TRACING_UNAVAILABLE) from exc


def check_tracing_available() -> None:
    """Raise :class:`TracingUnavailable` (with what to do) if OpenTelemetry is missing."""
    _trace_module()


def load_tracer() -> Any:
    """Kilowatt's tracer from the global tracer provider."""
    return _trace_module().get_tracer("kilowatt", __version__)


def traced_routes(routes: Mapping[str, Handler], tracer: Any) -> dict[str, Handler]:
    """The routes, each handler running inside a span of its own."""

    def wrap(action: str, handler: Handler) -> Handler:
        name = f"OCPP {action}"

        async def traced(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
            attributes = {
                "ocpp.action": action,
                "ocpp.charge_point_id": ctx.charge_point_id,
                "ocpp.unique_id": ctx.unique_id,
            }
            with tracer.start_as_current_span(name, attributes=attributes):
                return await handler(ctx, payload)

        return traced

    return {action: wrap(action, handler) for action, handler in routes.items()}


class TracedCommandBus:
    """A :class:`kilowatt.bus.base.CommandBus` whose calls run inside spans."""

    def __init__(self, bus: CommandBus, tracer: Any) -> None:
        self._bus = bus
        self._tracer = tracer

    async def call(
        self,
        charge_point_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        attributes = {"ocpp.action": action, "ocpp.charge_point_id": charge_point_id}
        with self._tracer.start_as_current_span(
            f"OCPP {action} (to charge point)", attributes=attributes
        ):
            return await self._bus.call(charge_point_id, action, payload, timeout=timeout)

    async def is_connected(self, charge_point_id: str) -> bool:
        return await self._bus.is_connected(charge_point_id)
