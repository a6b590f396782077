"""/api/v1/charge-points/{id}/status-history."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from kilowatt.app import Application
from kilowatt.services.charge_points import StatusReport
from tests.api.conftest import assert_error, error_fields

URL = "/api/v1/charge-points/CP1/status-history"


@pytest.fixture
async def history(kilowatt: Application) -> None:
    charge_points = kilowatt.services.charge_points
    await charge_points.register("CP1")
    await charge_points.register("CP2")
    for connector_id, status, error_code, minute in (
        (0, "Available", "NoError", 1),
        (1, "Preparing", "NoError", 2),
        (1, "Faulted", "GroundFailure", 3),
    ):
        await charge_points.status(
            "CP1",
            StatusReport(
                connector_id=connector_id,
                status=status,
                error_code=error_code,
                info="relay" if status == "Faulted" else None,
                vendor_id="Acme" if status == "Faulted" else None,
                vendor_error_code="E42" if status == "Faulted" else None,
                timestamp=datetime(2026, 3, 1, 8, minute, tzinfo=UTC),
            ),
        )
    await charge_points.status(
        "CP2", StatusReport(connector_id=1, status="Charging", error_code="NoError")
    )


@pytest.mark.usefixtures("history")
async def test_history_newest_first(reader: httpx.AsyncClient) -> None:
    response = await reader.get(URL)
    assert response.status_code == 200, response.text
    records = response.json()
    assert [(r["connector_id"], r["status"]) for r in records] == [
        (1, "Faulted"),
        (1, "Preparing"),
        (0, "Available"),
    ]
    assert records[0] == {
        "connector_id": 1,
        "status": "Faulted",
        "error_code": "GroundFailure",
        "info": "relay",
        "vendor_id": "Acme",
        "vendor_error_code": "E42",
        "timestamp": "2026-03-01T08:03:00Z",
        "received_at": "2026-03-01T09:00:00Z",
    }
    other = (await reader.get("/api/v1/charge-points/CP2/status-history")).json()
    assert [(r["status"], r["timestamp"]) for r in other] == [("Charging", None)]


@pytest.mark.usefixtures("history")
async def test_history_of_one_connector_and_limit(reader: httpx.AsyncClient) -> None:
    one = (await reader.get(URL, params={"connector_id": 1})).json()
    assert [r["status"] for r in one] == ["Faulted", "Preparing"]
    zero = (await reader.get(URL, params={"connector_id": 0})).json()
    assert [r["status"] for r in zero] == ["Available"]
    assert (await reader.get(URL, params={"connector_id": 7})).json() == []
    newest = (await reader.get(URL, params={"limit": 1})).json()
    assert [r["status"] for r in newest] == ["Faulted"]


async def test_history_of_a_charge_point_without_any(
    reader: httpx.AsyncClient, kilowatt: Application
) -> None:
    await kilowatt.services.charge_points.register("CP1")
    response = await reader.get(URL)
    assert response.status_code == 200
    assert response.json() == []


async def test_history_of_an_unknown_charge_point_is_404(reader: httpx.AsyncClient) -> None:
    error = assert_error(await reader.get(URL), 404, "not_found")
    assert error["message"] == (
        "charge point 'CP1' is not registered; register it with POST /api/v1/charge-points"
    )
    error = assert_error(
        await reader.get("/api/v1/charge-points/CP%00/status-history"), 422, "validation_error"
    )
    assert error_fields(error) == ["path.charge_point_id"]


async def test_history_parameters_are_checked(
    reader: httpx.AsyncClient, kilowatt: Application
) -> None:
    await kilowatt.services.charge_points.register("CP1")
    cases: list[tuple[dict[str, int | str], str]] = [
        ({"connector_id": -1}, "query.connector_id"),
        ({"connector_id": "one"}, "query.connector_id"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
    ]
    for params, field in cases:
        error = assert_error(await reader.get(URL, params=params), 422, "validation_error")
        assert error_fields(error) == [field], params
