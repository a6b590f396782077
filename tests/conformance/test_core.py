"""OCA compliance test cases for the Central System — Core profile.

Each test follows its case in the OCPP 1.6 compliance test-case document as derived
from the OCPP 1.6 specification: the charge point (the `ocpp` package) sends what a
charge point sends in that scenario, the operator acts through the REST API, and the
test asserts the frames on the wire and the state the Central System recorded.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    ClearCacheStatus,
    RemoteStartStopStatus,
    ResetStatus,
    UnlockStatus,
)

from tests.conformance.harness import Server, Station, register, stamp, station

_ids = itertools.count(1)


def new_id(case: str) -> str:
    return f"{case}-{next(_ids)}"


async def add_tag(api: httpx.AsyncClient, id_tag: str, **fields: Any) -> None:
    response = await api.post("/api/v1/id-tags", json={"id_tag": id_tag, **fields})
    assert response.status_code == 201, response.text


async def transaction(api: httpx.AsyncClient, transaction_id: int) -> dict[str, Any]:
    response = await api.get(f"/api/v1/transactions/{transaction_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def charge_point(api: httpx.AsyncClient, charge_point_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/charge-points/{charge_point_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def start(cp: Station, id_tag: str, meter: int = 1000, connector: int = 1) -> Any:
    # Sessions are compressed into seconds here; the start is stamped an hour back so
    # that the energy is physically plausible (Kilowatt flags > 1 MW average power).
    return await cp.call(
        call.StartTransaction(
            connector_id=connector, id_tag=id_tag, meter_start=meter, timestamp=stamp(-3600)
        )
    )


async def stop(
    cp: Station,
    transaction_id: int,
    meter: int,
    reason: str | None = None,
    id_tag: str | None = None,
) -> Any:
    return await cp.call(
        call.StopTransaction(
            transaction_id=transaction_id,
            meter_stop=meter,
            timestamp=stamp(),
            reason=reason,
            id_tag=id_tag,
        )
    )


def no_unsolicited_calls(cp: Station, *allowed: str) -> None:
    actions = [frame[2] for frame in cp.calls_received()]
    assert all(action in allowed for action in actions), f"unexpected CALLs: {actions}"


# ---------------------------------------------------------------- booting


async def test_tc_001_cold_boot_charge_point(server: Server, api: httpx.AsyncClient) -> None:
    """Boot, then a StatusNotification per connector (0 = the charge point itself)."""
    cp_id = new_id("TC001")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        boot = await cp.boot()
        assert boot.status == "Accepted"
        assert boot.interval == 300
        request, answer = cp.last_exchange("BootNotification")
        assert request[3] == {"chargePointVendor": "Conformance", "chargePointModel": "CT-1"}
        assert answer[0] == 3 and set(answer[2]) == {"status", "currentTime", "interval"}
        assert answer[2]["currentTime"].endswith("Z")
        for connector in (0, 1, 2):
            await cp.status(connector, "Available")
            assert cp.last_exchange("StatusNotification")[1][2] == {}
        heartbeat = await cp.call(call.Heartbeat())
        assert heartbeat.current_time.endswith("Z")
        no_unsolicited_calls(cp)
    state = await charge_point(api, cp_id)
    assert (state["vendor"], state["model"]) == ("Conformance", "CT-1")
    assert [(c["connector_id"], c["status"]) for c in state["connectors"]] == [
        (0, "Available"),
        (1, "Available"),
        (2, "Available"),
    ]


# ------------------------------------------------------ charging sessions


async def full_session(
    cp: Station, api: httpx.AsyncClient, id_tag: str, *, authorize: bool = True
) -> int:
    """Preparing → (Authorize) → StartTransaction → Charging → MeterValues → Stop."""
    await cp.status(1, "Preparing")
    if authorize:
        authorized = await cp.call(call.Authorize(id_tag=id_tag))
        assert authorized.id_tag_info["status"] == "Accepted"
    started = await start(cp, id_tag, meter=1000)
    assert started.id_tag_info["status"] == "Accepted"
    await cp.status(1, "Charging")
    await cp.call(
        call.MeterValues(
            connector_id=1,
            transaction_id=started.transaction_id,
            meter_value=[{"timestamp": stamp(-1800), "sampledValue": [{"value": "1500"}]}],
        )
    )
    return int(started.transaction_id)


async def test_tc_003_regular_charging_session_plugin_first(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Cable first: Preparing, Authorize, StartTransaction, Charging, MeterValues, then the
    driver stops locally: StopTransaction (Local) with the idTag, Finishing, Available."""
    cp_id = new_id("TC003")
    await register(api, cp_id)
    await add_tag(api, "TAG003")
    async with station(server, cp_id) as cp:
        await cp.boot()
        transaction_id = await full_session(cp, api, "TAG003")
        stopped = await stop(cp, transaction_id, 6000, reason="Local", id_tag="TAG003")
        assert stopped.id_tag_info["status"] == "Accepted"
        await cp.status(1, "Finishing")
        await cp.status(1, "Available")
        request, answer = cp.last_exchange("StartTransaction")
        assert request[3]["idTag"] == "TAG003" and request[3]["meterStart"] == 1000
        assert answer[2] == {"transactionId": transaction_id, "idTagInfo": {"status": "Accepted"}}
        no_unsolicited_calls(cp)
    stored = await transaction(api, transaction_id)
    assert (stored["meter_start"], stored["meter_stop"], stored["energy_wh"]) == (1000, 6000, 5000)
    assert (stored["state"], stored["stop_reason"]) == ("completed", "Local")
    assert [s["raw_value"] for s in stored["meter_values"]] == ["1500"]


async def test_tc_004_1_regular_charging_session_identification_first(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Identification first: Authorize before the cable is plugged in, then Preparing,
    StartTransaction, Charging; stopped by presenting the same idTag."""
    cp_id = new_id("TC004")
    await register(api, cp_id)
    await add_tag(api, "TAG004")
    async with station(server, cp_id) as cp:
        await cp.boot()
        authorized = await cp.call(call.Authorize(id_tag="TAG004"))
        assert authorized.id_tag_info == {"status": "Accepted"}
        await cp.status(1, "Preparing")
        started = await start(cp, "TAG004", meter=0)
        await cp.status(1, "Charging")
        stopped = await stop(cp, started.transaction_id, 2500, reason="Local", id_tag="TAG004")
        assert stopped.id_tag_info == {"status": "Accepted"}
        await cp.status(1, "Finishing")
    stored = await transaction(api, started.transaction_id)
    assert stored["energy_wh"] == 2500 and stored["stop_id_tag"] == "TAG004"


async def test_tc_004_2_regular_charging_session_identification_first_connection_timeout(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Authorized, but no cable within ConnectionTimeOut: the charge point returns to
    Available and no transaction is started — the Central System records none."""
    cp_id = new_id("TC0042")
    await register(api, cp_id)
    await add_tag(api, "TAG0042")
    async with station(server, cp_id) as cp:
        await cp.boot()
        assert (await cp.call(call.Authorize(id_tag="TAG0042"))).id_tag_info["status"] == "Accepted"
        await cp.status(1, "Preparing")
        await cp.status(1, "Available")
        no_unsolicited_calls(cp)
    listed = (await api.get("/api/v1/transactions", params={"charge_point_id": cp_id})).json()
    assert listed["items"] == []
    state = await charge_point(api, cp_id)
    assert state["connectors"][0]["status"] == "Available"


async def test_tc_005_1_ev_side_disconnected(server: Server, api: httpx.AsyncClient) -> None:
    """The EV unplugs while charging (StopTransactionOnEVSideDisconnect = true): the charge
    point stops the transaction with reason EVDisconnected and no idTag."""
    cp_id = new_id("TC005")
    await register(api, cp_id)
    await add_tag(api, "TAG005")
    async with station(server, cp_id) as cp:
        await cp.boot()
        transaction_id = await full_session(cp, api, "TAG005")
        await cp.status(1, "Finishing")
        stopped = await stop(cp, transaction_id, 4000, reason="EVDisconnected")
        # OCPP 1.6 §6.51: idTagInfo only when the request had an idTag.
        assert cp.last_exchange("StopTransaction")[1][2] == {}
        assert stopped.id_tag_info is None
        await cp.status(1, "Available")
    stored = await transaction(api, transaction_id)
    assert (stored["stop_reason"], stored["energy_wh"]) == ("EVDisconnected", 3000)


async def test_tc_007_regular_start_charging_session_cached_id(
    server: Server, api: httpx.AsyncClient
) -> None:
    """The idTag is in the charge point's authorization cache: no Authorize, the
    StartTransaction comes directly and is Accepted."""
    cp_id = new_id("TC007")
    await register(api, cp_id)
    await add_tag(api, "TAG007")
    async with station(server, cp_id) as cp:
        await cp.boot()
        await cp.status(1, "Preparing")
        started = await start(cp, "TAG007")
        assert started.id_tag_info == {"status": "Accepted"}
        await cp.status(1, "Charging")
        actions = [f[2] for d, f in cp.wire.frames if d == "out" and f[0] == 2]
        assert "Authorize" not in actions
    stored = await transaction(api, started.transaction_id)
    assert stored["state"] == "active" and stored["id_tag"] == "TAG007"


# --------------------------------------------------------- remote control


async def test_tc_010_remote_start_charging_session_cable_plugged_in_first(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Cable plugged in (Preparing), then the operator starts remotely; the charge point
    accepts and (AuthorizeRemoteTxRequests = false) sends StartTransaction."""
    cp_id = new_id("TC010")
    await register(api, cp_id)
    await add_tag(api, "TAG010")
    async with station(server, cp_id) as cp:
        await cp.boot()
        await cp.status(1, "Preparing")
        cp.answers["RemoteStartTransaction"] = call_result.RemoteStartTransaction(
            status=RemoteStartStopStatus.accepted
        )
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/remote-start",
            json={"idTag": "TAG010", "connectorId": 1},
        )
        assert response.status_code == 200 and response.json() == {"status": "Accepted"}
        sent = await cp.wait_for_call("RemoteStartTransaction")
        assert sent[3] == {"idTag": "TAG010", "connectorId": 1}
        started = await start(cp, "TAG010")
        assert started.id_tag_info["status"] == "Accepted"
        await cp.status(1, "Charging")
    assert (await transaction(api, started.transaction_id))["state"] == "active"


async def test_tc_011_1_remote_start_charging_session_remote_start_first(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Remote start first (the charge point goes to Preparing), then the cable."""
    cp_id = new_id("TC0111")
    await register(api, cp_id)
    await add_tag(api, "TAG0111")
    async with station(server, cp_id) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        cp.answers["RemoteStartTransaction"] = call_result.RemoteStartTransaction(
            status=RemoteStartStopStatus.accepted
        )
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/calls/RemoteStartTransaction",
            json={"idTag": "TAG0111"},
        )
        assert response.json() == {"status": "Accepted"}
        assert (await cp.wait_for_call("RemoteStartTransaction"))[3] == {"idTag": "TAG0111"}
        await cp.status(1, "Preparing")
        started = await start(cp, "TAG0111")
        await cp.status(1, "Charging")
        stopped = await stop(cp, started.transaction_id, 1800, reason="Local", id_tag="TAG0111")
        assert stopped.id_tag_info["status"] == "Accepted"
    assert (await transaction(api, started.transaction_id))["energy_wh"] == 800


async def test_tc_011_2_remote_start_charging_session_time_out(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Remote start accepted, but no cable before ConnectionTimeOut: Preparing → Available,
    no StartTransaction; the Central System records no transaction."""
    cp_id = new_id("TC0112")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        cp.answers["RemoteStartTransaction"] = call_result.RemoteStartTransaction(
            status=RemoteStartStopStatus.accepted
        )
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/remote-start", json={"idTag": "TAG0112"}
        )
        assert response.json() == {"status": "Accepted"}
        await cp.status(1, "Preparing")
        await cp.status(1, "Available")
    listed = (await api.get("/api/v1/transactions", params={"charge_point_id": cp_id})).json()
    assert listed["items"] == []


async def test_tc_012_remote_stop_charging_session(server: Server, api: httpx.AsyncClient) -> None:
    """The operator stops a running transaction: RemoteStopTransaction(transactionId),
    Accepted, then StopTransaction with reason Remote."""
    cp_id = new_id("TC012")
    await register(api, cp_id)
    await add_tag(api, "TAG012")
    async with station(server, cp_id) as cp:
        await cp.boot()
        transaction_id = await full_session(cp, api, "TAG012")
        cp.answers["RemoteStopTransaction"] = call_result.RemoteStopTransaction(
            status=RemoteStartStopStatus.accepted
        )
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/remote-stop", json={"transactionId": transaction_id}
        )
        assert response.json() == {"status": "Accepted"}
        assert (await cp.wait_for_call("RemoteStopTransaction"))[3] == {
            "transactionId": transaction_id
        }
        await stop(cp, transaction_id, 3000, reason="Remote")
        await cp.status(1, "Finishing")
    stored = await transaction(api, transaction_id)
    assert (stored["state"], stored["stop_reason"], stored["energy_wh"]) == (
        "completed",
        "Remote",
        2000,
    )


async def reset_case(
    server: Server, api: httpx.AsyncClient, case: str, kind: str, reason: str
) -> None:
    cp_id = new_id(case)
    await register(api, cp_id)
    await add_tag(api, f"TAG{case}")
    async with station(server, cp_id) as cp:
        await cp.boot()
        transaction_id = await full_session(cp, api, f"TAG{case}")
        cp.answers["Reset"] = call_result.Reset(status=ResetStatus.accepted)
        response = await api.post(f"/api/v1/charge-points/{cp_id}/reset", json={"type": kind})
        assert response.json() == {"status": "Accepted"}
        assert (await cp.wait_for_call("Reset"))[3] == {"type": kind}
        # OCPP 1.6 §5.14: the charge point stops its transactions before resetting.
        await stop(cp, transaction_id, 2000, reason=reason)
    # …and comes back: reconnect, boot, statuses.
    async with station(server, cp_id) as cp:
        assert (await cp.boot()).status == "Accepted"
        await cp.status(0, "Available")
        await cp.status(1, "Available")
        no_unsolicited_calls(cp)
    stored = await transaction(api, transaction_id)
    assert (stored["state"], stored["stop_reason"]) == ("completed", reason)


async def test_tc_013_hard_reset_with_transaction(server: Server, api: httpx.AsyncClient) -> None:
    """Hard reset with a transaction running: it is stopped (HardReset), the charge point
    reboots and boots again."""
    await reset_case(server, api, "TC013", "Hard", "HardReset")


async def test_tc_014_soft_reset_with_transaction(server: Server, api: httpx.AsyncClient) -> None:
    """Soft reset with a transaction running: stopped with SoftReset, then reboot."""
    await reset_case(server, api, "TC014", "Soft", "SoftReset")


async def unlock(
    server: Server, api: httpx.AsyncClient, case: str, answer: UnlockStatus, connector: int = 1
) -> tuple[Station, httpx.Response, str]:
    cp_id = new_id(case)
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        cp.answers["UnlockConnector"] = call_result.UnlockConnector(status=answer)
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/unlock", json={"connectorId": connector}
        )
        assert (await cp.wait_for_call("UnlockConnector"))[3] == {"connectorId": connector}
        return cp, response, cp_id


async def test_tc_017_1_unlock_connector_no_charging_session_running_not_fixed_cable(
    server: Server, api: httpx.AsyncClient
) -> None:
    """UnlockConnector on an idle connector with a socket: Unlocked."""
    _, response, _ = await unlock(server, api, "TC0171", UnlockStatus.unlocked)
    assert response.status_code == 200 and response.json() == {"status": "Unlocked"}


async def test_tc_017_2_unlock_connector_no_charging_session_running_fixed_cable(
    server: Server, api: httpx.AsyncClient
) -> None:
    """A fixed cable cannot be unlocked: the charge point answers NotSupported, which the
    API reports as the charge point's answer (200), not as a failure of the call."""
    _, response, _ = await unlock(server, api, "TC0172", UnlockStatus.not_supported)
    assert response.status_code == 200 and response.json() == {"status": "NotSupported"}


async def test_tc_018_1_unlock_connector_with_charging_session(
    server: Server, api: httpx.AsyncClient
) -> None:
    """OCPP 1.6 §5.17: unlocking a connector with a transaction stops it first
    (StopTransaction reason UnlockCommand), then the connector is Unlocked."""
    cp_id = new_id("TC0181")
    await register(api, cp_id)
    await add_tag(api, "TAG0181")
    async with station(server, cp_id) as cp:
        await cp.boot()
        transaction_id = await full_session(cp, api, "TAG0181")
        cp.answers["UnlockConnector"] = call_result.UnlockConnector(status=UnlockStatus.unlocked)
        response = await api.post(f"/api/v1/charge-points/{cp_id}/unlock", json={"connectorId": 1})
        assert response.json() == {"status": "Unlocked"}
        await stop(cp, transaction_id, 1200, reason="UnlockCommand")
        await cp.status(1, "Finishing")
    assert (await transaction(api, transaction_id))["stop_reason"] == "UnlockCommand"


async def test_tc_030_unlock_connector_unlock_failure(
    server: Server, api: httpx.AsyncClient
) -> None:
    """The lock does not open: UnlockFailed is reported back to the operator."""
    _, response, _ = await unlock(server, api, "TC030", UnlockStatus.unlock_failed)
    assert response.status_code == 200 and response.json() == {"status": "UnlockFailed"}


async def test_tc_031_unlock_connector_unknown_connector(
    server: Server, api: httpx.AsyncClient
) -> None:
    """A connector the charge point does not have: NotSupported."""
    _, response, _ = await unlock(server, api, "TC031", UnlockStatus.not_supported, connector=9)
    assert response.json() == {"status": "NotSupported"}


async def test_tc_026_remote_start_charging_session_rejected(
    server: Server, api: httpx.AsyncClient
) -> None:
    """The charge point refuses a remote start: Rejected reaches the operator; nothing
    is started or recorded."""
    cp_id = new_id("TC026")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        cp.answers["RemoteStartTransaction"] = call_result.RemoteStartTransaction(
            status=RemoteStartStopStatus.rejected
        )
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/remote-start",
            json={"idTag": "TAG026", "connectorId": 1},
        )
        assert response.status_code == 200 and response.json() == {"status": "Rejected"}
    listed = (await api.get("/api/v1/transactions", params={"charge_point_id": cp_id})).json()
    assert listed["items"] == []


async def test_tc_028_remote_stop_transaction_rejected(
    server: Server, api: httpx.AsyncClient
) -> None:
    """A remote stop for a transaction the charge point does not run: Rejected."""
    cp_id = new_id("TC028")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        cp.answers["RemoteStopTransaction"] = call_result.RemoteStopTransaction(
            status=RemoteStartStopStatus.rejected
        )
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/remote-stop", json={"transactionId": 987654}
        )
        assert response.status_code == 200 and response.json() == {"status": "Rejected"}
        assert (await cp.wait_for_call("RemoteStopTransaction"))[3] == {"transactionId": 987654}


async def test_tc_061_clear_authorization_data_in_authorization_cache(
    server: Server, api: httpx.AsyncClient
) -> None:
    """ClearCache: the charge point empties its authorization cache and says Accepted."""
    cp_id = new_id("TC061")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        cp.answers["ClearCache"] = call_result.ClearCache(status=ClearCacheStatus.accepted)
        response = await api.post(f"/api/v1/charge-points/{cp_id}/clear-cache")
        assert response.status_code == 200 and response.json() == {"status": "Accepted"}
        assert (await cp.wait_for_call("ClearCache"))[3] == {}


async def test_tc_064_data_transfer_to_a_central_system(
    server: Server, api: httpx.AsyncClient
) -> None:
    """DataTransfer from the charge point to a vendor the Central System does not know:
    the answer is UnknownVendorId (OCPP 1.6 §4.3), a CALLRESULT, never a CALLERROR."""
    cp_id = new_id("TC064")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        answer = await cp.call(
            call.DataTransfer(vendor_id="com.example.unknown", message_id="x", data="{}")
        )
        assert answer.status == "UnknownVendorId"
        assert cp.last_exchange("DataTransfer")[1][2] == {"status": "UnknownVendorId"}


# ------------------------------------------------------------ authorization


async def authorize_case(
    server: Server, api: httpx.AsyncClient, case: str, fields: dict[str, Any] | None, expected: str
) -> None:
    cp_id = new_id(case)
    await register(api, cp_id)
    id_tag = f"TAG{case}"
    if fields is not None:
        await add_tag(api, id_tag, **fields)
    async with station(server, cp_id) as cp:
        await cp.boot()
        await cp.status(1, "Preparing")
        answer = await cp.call(call.Authorize(id_tag=id_tag))
        assert answer.id_tag_info["status"] == expected
        # The charge point does not start; it returns to Available.
        await cp.status(1, "Available")
    listed = (await api.get("/api/v1/transactions", params={"charge_point_id": cp_id})).json()
    assert listed["items"] == []


async def test_tc_023_1_start_charging_session_authorize_invalid(
    server: Server, api: httpx.AsyncClient
) -> None:
    """An idTag the Central System does not know: Invalid."""
    await authorize_case(server, api, "TC0231", None, "Invalid")


async def test_tc_023_2_start_charging_session_authorize_expired(
    server: Server, api: httpx.AsyncClient
) -> None:
    """An idTag past its expiry date: Expired (with the expiry date)."""
    await authorize_case(server, api, "TC0232", {"expiry_date": "2020-01-01T00:00:00Z"}, "Expired")


async def test_tc_023_3_start_charging_session_authorize_blocked(
    server: Server, api: httpx.AsyncClient
) -> None:
    """A blocked idTag: Blocked."""
    await authorize_case(server, api, "TC0233", {"status": "Blocked"}, "Blocked")


async def test_tc_024_start_charging_session_lock_failure(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Authorized, but the connector lock fails: StatusNotification Faulted with
    ConnectorLockFailure; no transaction. The Central System records the fault."""
    cp_id = new_id("TC024")
    await register(api, cp_id)
    await add_tag(api, "TAG024")
    async with station(server, cp_id) as cp:
        await cp.boot()
        await cp.status(1, "Preparing")
        assert (await cp.call(call.Authorize(id_tag="TAG024"))).id_tag_info["status"] == "Accepted"
        await cp.status(1, "Faulted", error="ConnectorLockFailure")
    state = await charge_point(api, cp_id)
    assert (state["connectors"][0]["status"], state["connectors"][0]["error_code"]) == (
        "Faulted",
        "ConnectorLockFailure",
    )
    history = (await api.get(f"/api/v1/charge-points/{cp_id}/status-history")).json()
    statuses = [
        entry["status"] for entry in (history["items"] if isinstance(history, dict) else history)
    ]
    assert statuses[:2] == ["Faulted", "Preparing"]


# ----------------------------------------------------------- offline behaviour


async def test_tc_032_1_power_failure_boot_charging_point_stop_transactions(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Power fails during a transaction; after reboot the charge point boots, reports its
    connectors and sends the queued StopTransaction with reason PowerLoss and the
    timestamp of the failure (in the past)."""
    cp_id = new_id("TC0321")
    await register(api, cp_id)
    await add_tag(api, "TAG0321")
    async with station(server, cp_id) as cp:
        await cp.boot()
        transaction_id = await full_session(cp, api, "TAG0321")
    async with station(server, cp_id) as cp:
        assert (await cp.boot()).status == "Accepted"
        await cp.status(1, "Available")
        failure = stamp(-120)
        await cp.call(
            call.StopTransaction(
                transaction_id=transaction_id,
                meter_stop=1700,
                timestamp=failure,
                reason="PowerLoss",
            )
        )
    stored = await transaction(api, transaction_id)
    assert (stored["state"], stored["stop_reason"], stored["energy_wh"]) == (
        "completed",
        "PowerLoss",
        700,
    )
    assert stored["stopped_at"].startswith(failure[:19])


async def test_tc_037_1_offline_start_transaction(server: Server, api: httpx.AsyncClient) -> None:
    """A transaction started while offline (LocalAuthorizeOffline) is reported when the
    connection is back: StartTransaction with its past timestamp; the Central System
    answers with a transactionId and the tag's status, and stores the real start time."""
    cp_id = new_id("TC0371")
    await register(api, cp_id)
    await add_tag(api, "TAG0371")
    started_at = stamp(-600)
    async with station(server, cp_id) as cp:
        await cp.boot()
        started = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG0371", meter_start=50, timestamp=started_at
            )
        )
        assert started.id_tag_info["status"] == "Accepted"
        await cp.status(1, "Charging")
    stored = await transaction(api, started.transaction_id)
    assert stored["started_at"].startswith(started_at[:19]) and stored["state"] == "active"


async def test_tc_037_3_offline_start_transaction_invalid_id(
    server: Server, api: httpx.AsyncClient
) -> None:
    """Started offline with an idTag the Central System does not accept: the answer is
    Invalid, the transaction is recorded anyway, and the charge point (with
    StopTransactionOnInvalidId = true) stops it with reason DeAuthorized."""
    cp_id = new_id("TC0373")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        started = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="NOBODY0373", meter_start=10, timestamp=stamp(-300)
            )
        )
        assert started.id_tag_info["status"] == "Invalid"
        await stop(cp, started.transaction_id, 15, reason="DeAuthorized")
        await cp.status(1, "Finishing")
    stored = await transaction(api, started.transaction_id)
    assert (stored["start_status"], stored["stop_reason"], stored["energy_wh"]) == (
        "Invalid",
        "DeAuthorized",
        5,
    )


async def test_tc_039_offline_transaction(server: Server, api: httpx.AsyncClient) -> None:
    """A whole transaction happened offline: after reconnecting, the charge point sends
    its queue in order — StartTransaction, MeterValues, StopTransaction — with their
    own past timestamps; everything is stored with those timestamps."""
    cp_id = new_id("TC039")
    await register(api, cp_id)
    await add_tag(api, "TAG039")
    async with station(server, cp_id) as cp:
        await cp.boot()
        started = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG039", meter_start=0, timestamp=stamp(-900)
            )
        )
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=started.transaction_id,
                meter_value=[{"timestamp": stamp(-600), "sampledValue": [{"value": "700"}]}],
            )
        )
        stopped = await cp.call(
            call.StopTransaction(
                transaction_id=started.transaction_id,
                meter_stop=1400,
                timestamp=stamp(-300),
                id_tag="TAG039",
                reason="Local",
            )
        )
        assert stopped.id_tag_info["status"] == "Accepted"
    stored = await transaction(api, started.transaction_id)
    assert stored["energy_wh"] == 1400
    assert [s["raw_value"] for s in stored["meter_values"]] == ["700"]
    assert stored["started_at"] < stored["meter_values"][0]["timestamp"] < stored["stopped_at"]


# ------------------------------------------------------------- configuration


def key_table(**values: str) -> list[dict[str, Any]]:
    return [
        {"key": key, "readonly": key == "NumberOfConnectors", "value": value}
        for key, value in values.items()
    ]


KEYS = {
    "HeartbeatInterval": "300",
    "MeterValueSampleInterval": "60",
    "NumberOfConnectors": "2",
    "SupportedFeatureProfiles": "Core,RemoteTrigger",
}


async def test_tc_019_1_retrieve_all_configuration_keys(
    server: Server, api: httpx.AsyncClient
) -> None:
    """The operator asks for the whole configuration: GetConfiguration with no key; the
    answer is recorded as the charge point's reported configuration. (Choice: no
    GetConfiguration is sent on its own after boot — `configuration_sync_on_boot` is off
    for this suite, as the compliance tool expects.)"""
    cp_id = new_id("TC0191")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        no_unsolicited_calls(cp)
        cp.answers["GetConfiguration"] = call_result.GetConfiguration(
            configuration_key=key_table(**KEYS)
        )
        response = await api.post(f"/api/v1/charge-points/{cp_id}/configuration/refresh")
        assert response.status_code == 200, response.text
        assert (await cp.wait_for_call("GetConfiguration"))[3] == {}
    reported = {r["key"]: (r["value"], r["readonly"]) for r in response.json()["reported"]}
    assert reported == {
        "HeartbeatInterval": ("300", False),
        "MeterValueSampleInterval": ("60", False),
        "NumberOfConnectors": ("2", True),
        "SupportedFeatureProfiles": ("Core,RemoteTrigger", False),
    }


async def test_tc_019_2_retrieve_specific_configuration_key(
    server: Server, api: httpx.AsyncClient
) -> None:
    """GetConfiguration for one key (and one the charge point does not know): the value
    is answered and recorded, the unknown key listed as such."""
    cp_id = new_id("TC0192")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        cp.answers["GetConfiguration"] = call_result.GetConfiguration(
            configuration_key=key_table(HeartbeatInterval="300"), unknown_key=["NoSuchKey"]
        )
        response = await api.post(
            f"/api/v1/charge-points/{cp_id}/calls/GetConfiguration",
            json={"key": ["HeartbeatInterval", "NoSuchKey"]},
        )
        assert response.status_code == 200
        assert response.json() == {
            "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}],
            "unknownKey": ["NoSuchKey"],
        }
        assert (await cp.wait_for_call("GetConfiguration"))[3] == {
            "key": ["HeartbeatInterval", "NoSuchKey"]
        }
    state = (await api.get(f"/api/v1/charge-points/{cp_id}/configuration")).json()
    assert {r["key"]: r["value"] for r in state["reported"] if not r["unknown"]} == {
        "HeartbeatInterval": "300"
    }
    assert state["unknown_keys"] == ["NoSuchKey"]


async def change_case(
    server: Server, api: httpx.AsyncClient, case: str, key: str, value: str, answer: str
) -> dict[str, Any]:
    cp_id = new_id(case)
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        cp.answers["ChangeConfiguration"] = call_result.ChangeConfiguration(status=answer)
        response = await api.put(
            f"/api/v1/charge-points/{cp_id}/configuration/{key}", json={"value": value}
        )
        assert response.status_code == 200, response.text
        assert (await cp.wait_for_call("ChangeConfiguration"))[3] == {"key": key, "value": value}
        assert cp.last_exchange("ChangeConfiguration")[1][2] == {"status": answer}
        no_unsolicited_calls(cp, "ChangeConfiguration")
    body: dict[str, Any] = response.json()
    assert body["status"] == answer
    state = (await api.get(f"/api/v1/charge-points/{cp_id}/configuration")).json()
    recorded = {a["key"]: (a["value"], a["status"]) for a in state["last_answers"]}
    assert recorded[key] == (value, answer)
    return state


async def test_tc_021_change_set_configuration(server: Server, api: httpx.AsyncClient) -> None:
    """ChangeConfiguration of a read-write key with a valid value: Accepted, recorded.
    (Choice: no GetConfiguration follows on its own.)"""
    await change_case(server, api, "TC021", "MeterValueSampleInterval", "30", "Accepted")


async def test_tc_040_1_configuration_keys_not_supported(
    server: Server, api: httpx.AsyncClient
) -> None:
    """A key the charge point does not support (a vendor key, allowed through and sent as
    a string): NotSupported, recorded and returned as the charge point's answer."""
    await change_case(server, api, "TC0401", "VendorSpecificKey", "on", "NotSupported")


async def test_tc_040_2_configuration_keys_invalid_value(
    server: Server, api: httpx.AsyncClient
) -> None:
    """A value the catalogue accepts but this charge point refuses: Rejected, recorded.
    Values the catalogue itself refuses never reach the charge point (422)."""
    await change_case(server, api, "TC0402", "HeartbeatInterval", "86400", "Rejected")
    cp_id = new_id("TC0402b")
    await register(api, cp_id)
    async with station(server, cp_id) as cp:
        await cp.boot()
        response = await api.put(
            f"/api/v1/charge-points/{cp_id}/configuration/HeartbeatInterval",
            json={"value": "soon"},
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_value"
        assert cp.calls_received() == []
