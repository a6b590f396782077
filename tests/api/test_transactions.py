"""/api/v1/transactions: list with filters and pages, show, CSV export, unknown stops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kilowatt.api.routes import transactions as transaction_routes
from kilowatt.app import Application
from kilowatt.domain.models import IdTag, Transaction
from kilowatt.services.transactions import StopRequest
from tests.api.conftest import assert_error, error_fields

URL = "/api/v1/transactions"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
CSV_HEADER = (
    "id,charge_point_id,connector_id,id_tag,start_status,state,started_at,stopped_at,"
    "meter_start_wh,meter_stop_wh,energy_wh,energy_kwh,stop_reason,stop_id_tag,"
    "reservation_id,flags"
)


def at(minutes: int) -> datetime:
    return T0.replace(minute=minutes)


@dataclass(frozen=True)
class Seeded:
    completed: int
    abandoned: int
    active: int


@pytest.fixture
async def seeded(kilowatt: Application) -> Seeded:
    """CP1: a completed transaction with meter values; CP2: an abandoned one, an
    active one and a StopTransaction for an unknown id."""
    services = kilowatt.services
    await services.charge_points.register("CP1")
    await services.charge_points.register("CP2")
    await services.authorization.add(IdTag("TAG-A", max_concurrent_transactions=5))
    tx = services.transactions
    done = await tx.start("CP1", connector_id=1, id_tag="TAG-A", meter_start=1000, timestamp=at(0))
    await tx.meter_values(
        "CP1",
        connector_id=1,
        transaction_id=done.transaction_id,
        meter_value=[
            {
                "timestamp": "2026-03-01T08:10:00Z",
                "sampledValue": [
                    {"value": "4500", "measurand": "Energy.Active.Import.Register"},
                    {
                        "value": "11.04",
                        "measurand": "Power.Active.Import",
                        "unit": "kW",
                        "phase": "L1",
                    },
                ],
            }
        ],
    )
    await tx.stop(
        "CP1",
        StopRequest(
            transaction_id=done.transaction_id,
            meter_stop=13345,
            timestamp=at(30),
            id_tag="TAG-A",
            reason="Local",
        ),
    )
    abandoned = await tx.start(
        "CP2", connector_id=1, id_tag="TAG-B", meter_start=0, timestamp=at(5)
    )
    active = await tx.start("CP2", connector_id=1, id_tag="TAG-A", meter_start=50, timestamp=at(40))
    await tx.stop(
        "CP2", StopRequest(transaction_id=999, meter_stop=77, timestamp=at(45), reason="PowerLoss")
    )
    return Seeded(done.transaction_id, abandoned.transaction_id, active.transaction_id)


def ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_list_newest_first_with_energy_flags_and_state(
    reader: httpx.AsyncClient, seeded: Seeded
) -> None:
    response = await reader.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert (body["limit"], body["offset"], body["next_offset"]) == (100, 0, None)
    items = {item["id"]: item for item in body["items"]}
    assert list(items) == [seeded.active, seeded.abandoned, seeded.completed]
    assert items[seeded.completed] == {
        "id": seeded.completed,
        "charge_point_id": "CP1",
        "connector_id": 1,
        "id_tag": "TAG-A",
        "start_status": "Accepted",
        "state": "completed",
        "started_at": "2026-03-01T08:00:00Z",
        "meter_start": 1000,
        "stopped_at": "2026-03-01T08:30:00Z",
        "meter_stop": 13345,
        "energy_wh": 12345,
        "energy_kwh": 12.345,
        "stop_reason": "Local",
        "stop_id_tag": "TAG-A",
        "reservation_id": None,
        "flags": [],
        "created_at": "2026-03-01T09:00:00Z",
    }
    abandoned = items[seeded.abandoned]
    assert abandoned["state"] == "abandoned"
    assert abandoned["start_status"] == "Invalid"  # TAG-B is not known
    assert abandoned["flags"] == ["abandoned"]
    assert abandoned["stopped_at"] == "2026-03-01T08:40:00Z"
    assert abandoned["energy_wh"] is None and abandoned["energy_kwh"] is None
    active = items[seeded.active]
    assert active["state"] == "active"
    assert active["stopped_at"] is None and active["meter_stop"] is None
    assert active["energy_wh"] is None and active["energy_kwh"] is None


async def test_list_filters(reader: httpx.AsyncClient, seeded: Seeded) -> None:
    async def listed(**params: str) -> list[int]:
        return ids(await reader.get(URL, params=params))

    assert await listed(charge_point_id="CP1") == [seeded.completed]
    assert await listed(charge_point_id="CP2") == [seeded.active, seeded.abandoned]
    assert await listed(charge_point_id="CP9") == []
    assert await listed(id_tag="TAG-A") == [seeded.active, seeded.completed]
    assert await listed(state="active") == [seeded.active]
    assert await listed(state="completed") == [seeded.completed]
    assert await listed(state="abandoned") == [seeded.abandoned]
    assert await listed(since="2026-03-01T08:05:00Z") == [seeded.active, seeded.abandoned]
    assert await listed(until="2026-03-01T08:05:00Z") == [seeded.completed]
    # Another zone means the same instant: 09:05+01:00 is 08:05Z.
    assert await listed(until="2026-03-01T09:05:00+01:00") == [seeded.completed]
    assert await listed(since="2026-03-01T08:01:00Z", until="2026-03-01T08:40:00Z") == [
        seeded.abandoned
    ]
    assert await listed(charge_point_id="CP2", id_tag="TAG-A", state="active") == [seeded.active]


async def test_list_pages(reader: httpx.AsyncClient, seeded: Seeded) -> None:
    first = await reader.get(URL, params={"limit": 2})
    assert ids(first) == [seeded.active, seeded.abandoned]
    assert first.json()["next_offset"] == 2
    second = await reader.get(URL, params={"limit": 2, "offset": 2})
    assert ids(second) == [seeded.completed]
    assert second.json()["next_offset"] is None
    assert ids(await reader.get(URL, params={"limit": 1000, "offset": 3})) == []


BAD_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"state": "running"}, "query.state"),
    ({"since": "2026-03-01T08:00:00"}, "query.since"),
    ({"until": "yesterday"}, "query.until"),
    ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "query.until"),
    ({"since": "2026-03-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "query.until"),
    ({"limit": 1001}, "query.limit"),
    ({"limit": 0}, "query.limit"),
    ({"offset": -1}, "query.offset"),
    ({"charge_point_id": ""}, "query.charge_point_id"),
    ({"id_tag": "X" * 21}, "query.id_tag"),
    ({"id_tag": "A\u0000"}, "query.id_tag"),
    ({"since": "0001-01-01T00:00:00+01:00"}, "query.since"),
]


async def test_bad_filters_are_422_naming_the_parameter(reader: httpx.AsyncClient) -> None:
    for params, field in BAD_FILTERS:
        for path in (URL, f"{URL}/export"):
            if path.endswith("/export") and field in {"query.limit", "query.offset"}:
                continue  # the export has no pages
            error = assert_error(await reader.get(path, params=params), 422, "validation_error")
            assert error_fields(error) == [field], (path, params)
            assert field in error["message"]


async def test_show_with_meter_values(reader: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await reader.get(f"{URL}/{seeded.completed}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == seeded.completed
    assert body["energy_wh"] == 12345 and body["energy_kwh"] == 12.345
    assert body["state"] == "completed"
    assert body["meter_values"] == [
        {
            "timestamp": "2026-03-01T08:10:00Z",
            "connector_id": 1,
            "measurand": "Energy.Active.Import.Register",
            "phase": None,
            "location": "Outlet",
            "context": "Sample.Periodic",
            "format": "Raw",
            "unit": "Wh",
            "value": "4500",
            "raw_value": "4500",
        },
        {
            "timestamp": "2026-03-01T08:10:00Z",
            "connector_id": 1,
            "measurand": "Power.Active.Import",
            "phase": "L1",
            "location": "Outlet",
            "context": "Sample.Periodic",
            "format": "Raw",
            "unit": "kW",
            "value": "11.04",
            "raw_value": "11.04",
        },
    ]
    active = (await reader.get(f"{URL}/{seeded.active}")).json()
    assert active["meter_values"] == [] and active["state"] == "active"


async def test_show_unknown_and_invalid_ids(reader: httpx.AsyncClient, seeded: Seeded) -> None:
    error = assert_error(await reader.get(f"{URL}/999"), 404, "not_found")
    assert error["message"].startswith("transaction 999 does not exist")
    assert "/api/v1/transactions/unknown-stops" in error["message"]
    for bad in ("abc", "0", "2147483648"):
        error = assert_error(await reader.get(f"{URL}/{bad}"), 422, "validation_error")
        assert error_fields(error) == ["path.transaction_id"]


async def test_export_csv(reader: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await reader.get(f"{URL}/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="transactions.csv"'
    assert response.text.splitlines() == [
        CSV_HEADER,
        f"{seeded.active},CP2,1,TAG-A,Accepted,active,2026-03-01T08:40:00Z,,50,,,,,,,",
        f"{seeded.abandoned},CP2,1,TAG-B,Invalid,abandoned,2026-03-01T08:05:00Z,"
        "2026-03-01T08:40:00Z,0,,,,superseded by a new transaction on the same connector,,,"
        "abandoned",
        f"{seeded.completed},CP1,1,TAG-A,Accepted,completed,2026-03-01T08:00:00Z,"
        "2026-03-01T08:30:00Z,1000,13345,12345,12.345,Local,TAG-A,,",
    ]
    filtered = await reader.get(f"{URL}/export", params={"id_tag": "TAG-A", "state": "completed"})
    lines = filtered.text.splitlines()
    assert lines[0] == CSV_HEADER
    assert [line.split(",")[0] for line in lines[1:]] == [str(seeded.completed)]
    empty = await reader.get(f"{URL}/export", params={"charge_point_id": "CP9"})
    assert empty.text == CSV_HEADER + "\n"


async def test_export_pages_through_the_database_writing_each_transaction_once(
    reader: httpx.AsyncClient,
    kilowatt: Application,
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transaction_routes, "EXPORT_PAGE", 2)
    service = kilowatt.services.transactions
    original: Callable[..., Awaitable[list[Transaction]]] = service.list_transactions
    calls: list[int] = []
    late: list[int] = []

    async def listing(**kwargs: Any) -> list[Transaction]:
        calls.append(kwargs["offset"])
        if len(calls) == 2:
            # A transaction starts while the export runs: every older one moves down.
            started = await service.start(
                "CP1", connector_id=2, id_tag="TAG-A", meter_start=0, timestamp=at(50)
            )
            late.append(started.transaction_id)
        return await original(**kwargs)

    monkeypatch.setattr(service, "list_transactions", listing)
    response = await reader.get(f"{URL}/export")
    assert response.status_code == 200
    exported = [int(line.split(",")[0]) for line in response.text.splitlines()[1:]]
    assert exported == [seeded.active, seeded.abandoned, seeded.completed]
    assert calls == [0, 2, 4]
    assert late and late[0] not in exported


async def test_unknown_stops(reader: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await reader.get(f"{URL}/unknown-stops")
    assert response.status_code == 200
    assert response.json() == [
        {
            "charge_point_id": "CP2",
            "transaction_id": 999,
            "id_tag": None,
            "meter_stop": 77,
            "timestamp": "2026-03-01T08:45:00Z",
            "reason": "PowerLoss",
            "received_at": "2026-03-01T09:00:00Z",
        }
    ]
    error = assert_error(
        await reader.get(f"{URL}/unknown-stops", params={"limit": 0}), 422, "validation_error"
    )
    assert error_fields(error) == ["query.limit"]


async def test_nothing_yet(reader: httpx.AsyncClient) -> None:
    assert (await reader.get(URL)).json() == {
        "items": [],
        "limit": 100,
        "offset": 0,
        "next_offset": None,
    }
    assert (await reader.get(f"{URL}/unknown-stops")).json() == []
    assert (await reader.get(f"{URL}/export")).text == CSV_HEADER + "\n"
