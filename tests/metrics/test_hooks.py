"""The pieces behind /metrics: hooks, histograms, observers fan-out, tracing wrappers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kilowatt.app import create_app
from kilowatt.config import load_settings
from kilowatt.gateway.connection import (
    ChargePointConnection,
    FanOutObserver,
    combine_observers,
)
from kilowatt.metrics import Metrics
from kilowatt.ocpp16.routes import protocol_spec
from kilowatt.protocol.errors import CallErrorReceived, CallTimeout, NotConnected
from kilowatt.protocol.frames import build_call_error, build_call_result
from kilowatt.protocol.router import CallContext, Router
from kilowatt.protocol.session import Session
from kilowatt.tracing import TracedCommandBus, traced_routes
from tests.memory_transport import MemoryTransport


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_hooks_count_by_action_direction_and_type() -> None:
    metrics = Metrics(actions=["Heartbeat", "Reset"], process_metrics=False)
    metrics.call_handled("CP", "Heartbeat", build_call_result("1", {}), 0.0007)
    metrics.call_handled("CP", "Heartbeat", build_call_error("2", "InternalError", "x"), 0.3)
    metrics.call_refused("CP", "NoSuchAction", "NotImplemented")
    metrics.call_refused("CP", None, "FormationViolation")
    metrics.command_sent("CP", "Reset")
    metrics.command_settled("CP", "Reset", 0.02, None)
    metrics.command_settled("CP", "Reset", 0.5, CallErrorReceived("Weird", "?", {}))
    metrics.command_settled("CP", "Reset", 30.0, CallTimeout("late"))
    metrics.command_settled("CP", "Reset", 0.0, NotConnected("gone"))
    metrics.group_committed(3, 0.004)
    found = samples(metrics)

    def get(name: str, **labels: str) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    total = "kilowatt_ocpp_messages_total"
    assert get(total, action="Heartbeat", direction="in", type="CALL") == 2
    assert get(total, action="Heartbeat", direction="out", type="CALLRESULT") == 1
    assert get(total, action="Heartbeat", direction="out", type="CALLERROR") == 1
    assert get(total, action="other", direction="in", type="CALL") == 2
    assert get(total, action="Reset", direction="in", type="CALLRESULT") == 1
    assert get(total, action="Reset", direction="in", type="CALLERROR") == 1
    errors = "kilowatt_ocpp_call_errors_total"
    assert get(errors, direction="out", action="Heartbeat", code="InternalError") == 1
    assert get(errors, direction="out", action="other", code="NotImplemented") == 1
    assert get(errors, direction="out", action="other", code="FormationViolation") == 1
    assert get(errors, direction="in", action="Reset", code="other") == 1  # not an OCPP code
    assert get("kilowatt_ocpp_command_timeouts_total", action="Reset") == 1
    assert get("kilowatt_ocpp_commands_lost_total", action="Reset") == 1
    handler = "kilowatt_ocpp_handler_seconds_bucket"
    assert get(handler, action="Heartbeat", le="0.0005") == 0
    assert get(handler, action="Heartbeat", le="0.001") == 1
    assert get(handler, action="Heartbeat", le="0.25") == 1
    assert get(handler, action="Heartbeat", le="0.5") == 2
    assert get(handler, action="Heartbeat", le="+Inf") == 2
    assert get("kilowatt_ocpp_command_seconds_count", action="Reset") == 2
    # Each of the three units waited for the same 4 ms commit.
    assert get("kilowatt_db_unit_of_work_seconds_count") == 3
    assert get("kilowatt_db_unit_of_work_seconds_bucket", le="0.005") == 3
    assert get("kilowatt_db_group_commit_units_bucket", le="2.0") == 0
    assert get("kilowatt_db_group_commit_units_bucket", le="4.0") == 1


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, str, str | bytes]] = []

    def frame_received(self, charge_point_id: str, data: str | bytes) -> None:
        self.frames.append(("in", charge_point_id, data))

    def frame_sent(self, charge_point_id: str, data: bytes) -> None:
        self.frames.append(("out", charge_point_id, data))


def test_combine_observers() -> None:
    first, second = _Recorder(), _Recorder()
    assert combine_observers() is None
    assert combine_observers(None) is None
    assert combine_observers(first, None) is first  # one: itself, no fan-out in between
    both = combine_observers(first, None, second)
    assert isinstance(both, FanOutObserver)
    both.frame_received("CP", "[2]")
    both.frame_sent("CP", b"[3]")
    assert first.frames == second.frames == [("in", "CP", "[2]"), ("out", "CP", b"[3]")]


async def test_a_connection_with_two_observers_and_metrics() -> None:
    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": "2026-03-01T00:00:00Z"}

    router = Router({"Heartbeat": heartbeat})
    first, second = _Recorder(), _Recorder()
    metrics = Metrics(actions=protocol_spec().known, process_metrics=False)
    sink = MemoryTransport()
    connection = ChargePointConnection(
        "CP",
        sink,
        Session(protocol_spec(), handled=router),
        router,
        observer=combine_observers(first, second),
        metrics=metrics,
    )
    connection.message_received('[2,"1","Heartbeat",{}]')
    await connection.wait_idle()
    assert orjson.loads(sink.sent[0])[0] == 3
    assert len(first.frames) == len(second.frames) == 2
    text = metrics.render().decode()
    assert 'kilowatt_ocpp_handler_seconds_count{action="Heartbeat"} 1.0' in text


# ------------------------------------------------------------------- tracing


class _Span:
    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.attributes = attributes


class _Tracer:
    def __init__(self) -> None:
        self.spans: list[_Span] = []

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, *, attributes: dict[str, Any]) -> Iterator[_Span]:
        span = _Span(name, attributes)
        self.spans.append(span)
        yield span


class _Context:
    charge_point_id = "CP"
    unique_id = "42"
    action = "Heartbeat"


async def test_traced_routes_and_commands() -> None:
    tracer = _Tracer()

    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": "now"}

    routes = traced_routes({"Heartbeat": heartbeat}, tracer)
    assert await routes["Heartbeat"](_Context(), {}) == {"currentTime": "now"}
    assert tracer.spans[0].name == "OCPP Heartbeat"
    assert tracer.spans[0].attributes == {
        "ocpp.action": "Heartbeat",
        "ocpp.charge_point_id": "CP",
        "ocpp.unique_id": "42",
    }

    class _Bus:
        async def call(
            self,
            charge_point_id: str,
            action: str,
            payload: dict[str, Any],
            *,
            timeout: float | None = None,
        ) -> dict[str, Any]:
            return {"status": "Accepted"}

        async def is_connected(self, charge_point_id: str) -> bool:
            return True

    bus = TracedCommandBus(_Bus(), tracer)
    assert await bus.call("CP", "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    assert await bus.is_connected("CP")
    assert tracer.spans[1].name == "OCPP Reset (to charge point)"


async def test_tracing_on_composes_an_application(tmp_path: Path) -> None:
    """With opentelemetry-api (FastAPI needs it) and no exporter: no-op spans."""
    pytest.importorskip("opentelemetry.trace")
    app = create_app(load_settings(port=0, database_url=f"sqlite:///{tmp_path}/k.db", tracing=True))
    assert app.settings.tracing
    assert "traced_routes" in app.router["Heartbeat"].__qualname__
    await app.services.store.close()
