"""The API over a real socket: ``app.start()`` serves it on the OCPP port.

One port, one database: what the API writes, charge points see, and what charge
points send, the API shows.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from kilowatt.app import Application, create_app
from kilowatt.config import load_settings
from kilowatt.services.api_tokens import Role
from tests.api.conftest import assert_error

TIMEOUT = 5.0


@pytest.fixture
async def running(engine_url: str) -> AsyncIterator[Application]:
    app = create_app(
        load_settings(
            database_url=engine_url,
            port=0,
            ping_interval=0,
            strict_outgoing=True,
            shutdown_timeout=1.0,
            log_level="warning",
        )
    )
    await app.start()
    try:
        yield app
    finally:
        async with asyncio.timeout(10):
            await app.stop()


class RawChargePoint:
    """Sends CALLs and returns their results; refuses the server's own CALLs (the
    Central System may ask things after a boot, e.g. GetConfiguration)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = f"m{next(self._ids)}"
        await self.ws.send(orjson.dumps([2, unique_id, action, payload]).decode())
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = orjson.loads(await self.ws.recv())
                if frame[0] == 2:
                    refusal = [4, frame[1], "NotSupported", "not in this test", {}]
                    await self.ws.send(orjson.dumps(refusal).decode())
                    continue
                break
        assert frame[:2] == [3, unique_id], frame
        answer: dict[str, Any] = frame[2]
        return answer


async def test_the_api_and_ocpp_share_the_port_and_the_database(running: Application) -> None:
    port = running.gateway.port
    _, secret = await running.services.tokens.create("operator", Role.ADMIN)
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT, trust_env=False
    ) as http:
        refused = await http.get("/api/v1/id-tags")
        assert_error(refused, 401, "unauthorized")
        assert refused.headers["WWW-Authenticate"] == "Bearer"

        created = await http.post("/api/v1/id-tags", json={"id_tag": "CARD-1"}, headers=auth)
        assert created.status_code == 201, created.text
        imported = await http.post(
            "/api/v1/id-tags/import",
            content=b"id_tag,status\nCARD-2,Blocked\n",
            headers={**auth, "Content-Type": "text/csv"},
        )
        assert imported.json() == {"rows": 1, "added": 1, "updated": 0, "skipped": 0}
        await running.services.charge_points.register("CP1")

        async with asyncio.timeout(TIMEOUT):
            ws = await connect(
                f"ws://127.0.0.1:{port}{running.settings.ocpp_path}CP1",
                subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                ping_interval=None,
            )
        try:
            cp = RawChargePoint(ws)
            boot = await cp.result(
                "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "Raw"}
            )
            assert boot["status"] == "Accepted"
            assert (await cp.result("Authorize", {"idTag": "CARD-1"}))["idTagInfo"] == {
                "status": "Accepted"
            }
            assert (await cp.result("Authorize", {"idTag": "CARD-2"}))["idTagInfo"][
                "status"
            ] == "Blocked"
            await cp.result(
                "StatusNotification",
                {"connectorId": 1, "status": "Preparing", "errorCode": "NoError"},
            )
            started = await cp.result(
                "StartTransaction",
                {
                    "connectorId": 1,
                    "idTag": "CARD-1",
                    "meterStart": 100,
                    "timestamp": "2026-03-01T08:00:00Z",
                },
            )
            transaction_id = started["transactionId"]
        finally:
            await ws.close()

        history = await http.get("/api/v1/charge-points/CP1/status-history", headers=auth)
        assert history.status_code == 200
        assert [(r["connector_id"], r["status"]) for r in history.json()] == [(1, "Preparing")]

        listed = await http.get(
            "/api/v1/transactions", params={"charge_point_id": "CP1"}, headers=auth
        )
        assert [(t["id"], t["id_tag"], t["state"]) for t in listed.json()["items"]] == [
            (transaction_id, "CARD-1", "active")
        ]
        exported = await http.get("/api/v1/id-tags/export", headers=auth)
        assert exported.text.splitlines()[1:] == [
            "CARD-1,Accepted,,,,,1",
            "CARD-2,Blocked,,,,,1",
        ]
