"""Protocol-path benchmark: Kilowatt's session + router vs ``ocpp``'s ``route_message``.

Routes the same three frames — Heartbeat, StatusNotification and a MeterValues with
three sampled values — through the whole in-process path with validation on, side by
side in one run:

* Kilowatt: ``ChargePointConnection`` with an in-memory transport: parse → schema
  validation → routing → handler → response validation → serialization → write;
* baseline: ``ocpp.v16.ChargePoint.route_message`` (the ``ocpp`` package, 2.1.0) with
  handlers registered by ``@on`` and a connection object that only collects frames.

Both sides serve ``--charge-points`` charge points (default 100, as ``bench/load.py``
runs), each with its own session, and every round each charge point's frame is
routed once: on Kilowatt's side every frame is handed to its connection, then the
round waits for the answers (a handler that writes runs in an asyncio task, as in
``kilowatt serve``, where one turn of the event loop serves many charge points); on
the baseline's, each ``route_message`` is awaited in turn (its handlers answer at
once, so it never waits for the loop). ``--charge-points 1`` gives the one-at-a-time
figure, where every message of ours also pays the benchmark's own wait for its task
(a turn of the loop, about 2 µs). The two sides are measured alternately, in four
slices each, so that a change in the machine's speed during the run touches both.

Run::

    .venv/bin/python bench/protocol.py [--seconds 3] [--charge-points 100] \
        [--no-uvloop] [--metrics]

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


Route = Callable[[str], Awaitable[None]]


def kilowatt_route(*, charge_points: int = 1, metrics: bool = False) -> tuple[Route, _Sink]:
    """A round: ``message`` to each of ``charge_points`` connections, their answers
    awaited."""
    router = kilowatt_router()
    sink = _Sink()
    spec = protocol_spec()
    hooks = Metrics(actions=spec.known, process_metrics=False) if metrics else None
    connections = [
        ChargePointConnection(
            f"BENCH{n:05d}", sink, Session(spec, handled=router), router, metrics=hooks
        )
        for n in range(charge_points)
    ]

    async def route(message: str) -> None:
        for connection in connections:
            connection.message_received(message)
        for connection in connections:
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


def baseline_route(*, charge_points: int = 1) -> tuple[Route, _Sink]:
    """A round: ``message`` routed by each of ``charge_points`` charge points in turn."""
    sink = _Sink()
    routes = [
        _BaselineChargePoint(f"BENCH{n:05d}", sink).route_message for n in range(charge_points)
    ]

    async def route(message: str) -> None:
        for route_message in routes:
            await route_message(message)

    return route, sink


SLICES = 4


class _Side:
    """One side's route, and the messages and seconds measured so far."""

    def __init__(self, route: Route, per_round: int) -> None:
        self.route = route
        self.per_round = per_round
        self.done = 0
        self.seconds = 0.0

    async def measure(self, message: str, seconds: float) -> None:
        # As many rounds as fit in ``seconds``, in batches that make ~1,000 messages.
        rounds = max(1, 1000 // self.per_round)
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(rounds):
                await self.route(message)
            self.done += rounds * self.per_round
            now = time.perf_counter()
            if now >= deadline:
                self.seconds += now - start
                return

    @property
    def rate(self) -> float:
        return self.done / self.seconds


async def compare(
    ours: Route, theirs: Route, message: str, seconds: float, charge_points: int
) -> tuple[float, float]:
    """Both sides' rates for ``message``: ``seconds`` each, alternately, in slices."""
    sides = _Side(ours, charge_points), _Side(theirs, charge_points)
    for side in sides:  # warm-up
        for _ in range(max(1, 200 // charge_points)):
            await side.route(message)
    for _ in range(SLICES):
        for side in sides:
            await side.measure(message, seconds / SLICES)
    return sides[0].rate, sides[1].rate


async def main_async(seconds: float, *, charge_points: int = 100, metrics: bool = False) -> int:
    import logging

    logging.disable(logging.CRITICAL)  # both sides log per message at INFO otherwise
    rows = []
    for kind, message in MESSAGES.items():
        ours, ours_sink = kilowatt_route(charge_points=charge_points, metrics=metrics)
        theirs, theirs_sink = baseline_route(charge_points=charge_points)
        print(f"measuring {kind} …", file=sys.stderr, flush=True)
        ours_rate, theirs_rate = await compare(ours, theirs, message, seconds, charge_points)
        assert ours_sink.sent > 0 and theirs_sink.sent > 0, "a side answered nothing"
        rows.append((kind, ours_rate, theirs_rate))
    print(f"{charge_points} charge point(s), each routing one message per round")
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
    parser.add_argument(
        "--charge-points",
        type=int,
        default=100,
        help="charge points routing one message each per round (1: one message at a time)",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument(
        "--metrics", action="store_true", help="with the Prometheus hooks of kilowatt.metrics"
    )
    args = parser.parse_args()
    if args.charge_points < 1:
        parser.error("--charge-points must be at least 1")
    run = main_async(args.seconds, charge_points=args.charge_points, metrics=args.metrics)
    if not args.no_uvloop:
        import uvloop

        return uvloop.run(run)
    return asyncio.run(run)


if __name__ == "__main__":
    raise SystemExit(main())
