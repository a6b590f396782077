"""Protocol-path benchmark: Kilowatt's session + router vs ``ocpp``'s ``route_message``.

Routes the same three frames — Heartbeat, StatusNotification and a MeterValues with
three sampled values — through the whole in-process path with validation on, one
message at a time, side by side in one run:

* Kilowatt: ``ChargePointConnection`` with an in-memory transport: parse → schema
  validation → routing → handler → response validation → serialization → write;
* baseline: ``ocpp.v16.ChargePoint.route_message`` (the ``ocpp`` package, 2.1.0) with
  handlers registered by ``@on`` and a connection object that only collects frames.

Run::

    .venv/bin/python bench/protocol.py [--seconds 3] [--no-uvloop] [--metrics]

``--metrics`` gives Kilowatt's connection the Prometheus hooks of ``kilowatt.metrics``
(as ``kilowatt serve`` has them), to see what measuring costs per message.

Target: Kilowatt ≥ 50× the baseline's rate for every message kind.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from kilowatt.clock import SystemClock, format_datetime
from kilowatt.gateway.connection import ChargePointConnection
from kilowatt.metrics import Metrics
from kilowatt.ocpp16.routes import protocol_spec
from kilowatt.protocol.router import CallContext, Inline, Router
from kilowatt.protocol.session import Session

NOW = "2026-01-01T00:00:00Z"
MESSAGES: dict[str, str] = {
    "Heartbeat": orjson.dumps([2, "m-1", "Heartbeat", {}]).decode(),
    "StatusNotification": orjson.dumps(
        [
            2,
            "m-2",
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": NOW},
        ]
    ).decode(),
    "MeterValues": orjson.dumps(
        [
            2,
            "m-3",
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": 42,
                "meterValue": [
                    {
                        "timestamp": NOW,
                        "sampledValue": [
                            {
                                "value": "12345",
                                "context": "Sample.Periodic",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            },
                            {
                                "value": "7400",
                                "context": "Sample.Periodic",
                                "measurand": "Power.Active.Import",
                                "unit": "W",
                            },
                            {
                                "value": "55",
                                "context": "Sample.Periodic",
                                "measurand": "SoC",
                                "unit": "Percent",
                            },
                        ],
                    }
                ],
            },
        ]
    ).decode(),
}


class _Sink:
    """An in-memory transport/connection that only counts what is written."""

    def __init__(self) -> None:
        self.sent = 0

    def send_text(self, frame: bytes) -> None:
        self.sent += 1

    async def send(self, frame: str) -> None:
        self.sent += 1

    async def close(self, code: int, reason: str) -> None:
        return None


def kilowatt_router() -> Router:
    """Handlers doing what the baseline's do, so that only the protocol path differs."""
    clock = SystemClock()

    def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": format_datetime(clock.now())}

    async def acknowledge(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    # As in `kilowatt serve`: a Heartbeat has nothing to wait for and is answered
    # inline; StatusNotification and MeterValues write, so they run in a task.
    return Router(
        {
            "Heartbeat": Inline(heartbeat),
            "StatusNotification": acknowledge,
            "MeterValues": acknowledge,
        }
    )


def kilowatt_route(*, metrics: bool = False) -> tuple[Callable[[str], Awaitable[None]], _Sink]:
    router = kilowatt_router()
    sink = _Sink()
    spec = protocol_spec()
    session = Session(spec, handled=router)
    hooks = Metrics(actions=spec.known, process_metrics=False) if metrics else None
    connection = ChargePointConnection("BENCH", sink, session, router, metrics=hooks)

    async def route(message: str) -> None:
        connection.message_received(message)
        worker = connection._worker
        if worker is not None:
            await worker

    return route, sink


class _BaselineChargePoint(OcppChargePoint):  # type: ignore[misc]
    @on(Action.heartbeat)  # type: ignore[misc]
    async def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())

    @on(Action.status_notification)  # type: ignore[misc]
    async def on_status(self, **kwargs: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.meter_values)  # type: ignore[misc]
    async def on_meter_values(self, **kwargs: Any) -> Any:
        return call_result.MeterValues()


def baseline_route() -> tuple[Callable[[str], Awaitable[None]], _Sink]:
    sink = _Sink()
    charge_point = _BaselineChargePoint("BENCH", sink)
    return charge_point.route_message, sink


async def measure(route: Callable[[str], Awaitable[None]], message: str, seconds: float) -> float:
    for _ in range(200):  # warm-up
        await route(message)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            await route(message)
        done += 100
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


async def main_async(seconds: float, *, metrics: bool = False) -> int:
    import logging

    logging.disable(logging.CRITICAL)  # both sides log per message at INFO otherwise
    rows = []
    for kind, message in MESSAGES.items():
        ours, ours_sink = kilowatt_route(metrics=metrics)
        theirs, theirs_sink = baseline_route()
        print(f"measuring {kind} …", file=sys.stderr, flush=True)
        ours_rate = await measure(ours, message, seconds)
        theirs_rate = await measure(theirs, message, seconds)
        assert ours_sink.sent > 0 and theirs_sink.sent > 0, "a side answered nothing"
        rows.append((kind, ours_rate, theirs_rate))
    print("| message | Kilowatt msgs/s | ocpp route_message msgs/s | ratio |")
    print("|---|---:|---:|---:|")
    worst = float("inf")
    for kind, ours_rate, theirs_rate in rows:
        ratio = ours_rate / theirs_rate
        worst = min(worst, ratio)
        print(f"| {kind} | {ours_rate:,.0f} | {theirs_rate:,.0f} | {ratio:.1f}× |")
    print(f"\nslowest ratio {worst:.1f}× (target ≥ 50×)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per side and message kind")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument(
        "--metrics", action="store_true", help="with the Prometheus hooks of kilowatt.metrics"
    )
    args = parser.parse_args()
    if not args.no_uvloop:
        import uvloop

        return uvloop.run(main_async(args.seconds, metrics=args.metrics))
    return asyncio.run(main_async(args.seconds, metrics=args.metrics))


if __name__ == "__main__":
    raise SystemExit(main())
