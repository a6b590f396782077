"""How remote control fails: each failure has its HTTP status and the one error shape.

404 unknown charge point or action; 409 not connected; 422 invalid payload (nothing
is sent); 502 the charge point answered CALLERROR, or an answer that breaks the
schema; 504 no answer in time; 401 no or bad token; 403 read-only token.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from ocpp.exceptions import GenericError, OccurenceConstraintViolationError
from ocpp.v16 import call, call_result

from kilowatt.app import Application
from kilowatt.services.api_tokens import Role
from tests.api_remote.charge_point import ANSWERS, ChargePoint
from tests.api_remote.conftest import (
    CALL_TIMEOUT,
    CHARGE_POINT_ID,
    assert_error,
    bounded,
    connected_charge_point,
    eventually,
    http_client,
    raw_charge_point,
)

BASE = f"/api/v1/charge-points/{CHARGE_POINT_ID}"
RESET = {"type": "Soft"}


async def post_json(api: httpx.AsyncClient, path: str, text: str) -> httpx.Response:
    """POST a body exactly as written (to send what ``json=`` would refuse to encode)."""
    return await api.post(path, content=text, headers={"Content-Type": "application/json"})


async def assert_nothing_sent_then_works(api: httpx.AsyncClient, cp: ChargePoint) -> None:
    """No CALL reached the charge point so far, and the next valid call is the first."""
    assert cp.wire.calls_received() == []
    response = await api.post(f"{BASE}/calls/Reset", json=RESET)
    assert response.status_code == 200, response.text
    calls = cp.wire.calls_received()
    assert [frame[2:] for frame in calls] == [["Reset", RESET]], calls


# ----------------------------------------------------------------- 404


async def test_unknown_charge_point(api: httpx.AsyncClient) -> None:
    for path, body in (("/calls/Reset", RESET), ("/reset", RESET), ("/clear-cache", None)):
        response = await api.post(f"/api/v1/charge-points/NOPE-7{path}", json=body)
        error = assert_error(response, 404, "not_found")
        assert "NOPE-7" in error["message"], error
        assert error["details"] == {}


async def test_unknown_action(api: httpx.AsyncClient, charge_point: ChargePoint) -> None:
    response = await api.post(f"{BASE}/calls/Dance", json={})
    error = assert_error(response, 404, "unknown_action")
    assert "Dance" in error["message"], error
    assert charge_point.wire.calls_received() == []


@pytest.mark.parametrize(
    "action", ["Heartbeat", "BootNotification", "StatusNotification", "Authorize", "reset"]
)
async def test_action_of_the_other_direction_or_misspelt(
    api: httpx.AsyncClient, charge_point: ChargePoint, action: str
) -> None:
    # Heartbeat & co. are sent by charge points, never to them: not an action here.
    response = await api.post(f"{BASE}/calls/{action}", json={})
    error = assert_error(response, 404, "unknown_action")
    assert action in error["message"], error
    await assert_nothing_sent_then_works(api, charge_point)


# ----------------------------------------------------------------- 409


async def test_registered_but_not_connected(kilowatt: Application, api: httpx.AsyncClient) -> None:
    await kilowatt.services.charge_points.register(CHARGE_POINT_ID)
    for path, body in (("/calls/Reset", RESET), ("/unlock", {"connectorId": 1})):
        response = await api.post(f"{BASE}{path}", json=body)
        error = assert_error(response, 409, "not_connected")
        assert CHARGE_POINT_ID in error["message"], error


async def test_disconnected_after_being_connected(
    kilowatt: Application, api: httpx.AsyncClient
) -> None:
    async with connected_charge_point(kilowatt):
        response = await api.post(f"{BASE}/calls/Reset", json=RESET)
        assert response.status_code == 200, response.text
    response = await api.post(f"{BASE}/calls/Reset", json=RESET)
    assert_error(response, 409, "not_connected")


async def test_charge_point_disconnects_while_the_call_waits(
    kilowatt: Application, api: httpx.AsyncClient
) -> None:
    async with connected_charge_point(kilowatt) as cp:
        arrived = asyncio.Event()

        async def hang(kwargs: dict[str, Any]) -> Any:
            arrived.set()
            await asyncio.Event().wait()

        cp.overrides["Reset"] = hang
        pending = asyncio.create_task(api.post(f"{BASE}/calls/Reset", json=RESET))
        await bounded(arrived.wait())
        await cp.wire.ws.close()
        response = await bounded(pending, CALL_TIMEOUT / 2)
    # Failed at once when the socket closed, not after the call timeout.
    assert_error(response, 409, "not_connected")


# ----------------------------------------------------------------- 422

INVALID: dict[str, tuple[str, dict[str, Any], str, str, str, str]] = {
    # case: (action, payload, ocppErrorCode, path, rule, what the message must name)
    "enum": (
        "Reset",
        {"type": "Medium"},
        "PropertyConstraintViolation",
        "payload.type",
        "enum",
        "payload.type",
    ),
    "missing-field": ("Reset", {}, "ProtocolError", "payload", "required", "'type'"),
    "wrong-type": (
        "ChangeAvailability",
        {"connectorId": "one", "type": "Operative"},
        "TypeConstraintViolation",
        "payload.connectorId",
        "type",
        "payload.connectorId",
    ),
    "float-for-integer": (
        "RemoteStopTransaction",
        {"transactionId": 42.5},
        "TypeConstraintViolation",
        "payload.transactionId",
        "type",
        "payload.transactionId",
    ),
    "unknown-field": (
        "Reset",
        {"type": "Soft", "when": "now"},
        "FormationViolation",
        "payload",
        "additionalProperties",
        "'when'",
    ),
    "too-long": (
        "RemoteStartTransaction",
        {"idTag": "T" * 21},
        "TypeConstraintViolation",
        "payload.idTag",
        "maxLength",
        "payload.idTag",
    ),
    "bad-date-time": (
        "ReserveNow",
        {
            "connectorId": 1,
            "expiryDate": "tomorrow at noon",
            "idTag": "TAG-0001",
            "reservationId": 1,
        },
        "PropertyConstraintViolation",
        "payload.expiryDate",
        "format",
        "payload.expiryDate",
    ),
    "nested-missing-field": (
        "SetChargingProfile",
        {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {"chargingRateUnit": "W"},
            },
        },
        "ProtocolError",
        "payload.csChargingProfiles.chargingSchedule",
        "required",
        "'chargingSchedulePeriod'",
    ),
    "security-enum": (
        "GetInstalledCertificateIds",
        {"certificateType": "NoSuchCertificate"},
        "PropertyConstraintViolation",
        "payload.certificateType",
        "enum",
        "payload.certificateType",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_payload_is_not_sent(
    api: httpx.AsyncClient, charge_point: ChargePoint, case: str
) -> None:
    action, payload, ocpp_code, path, rule, named = INVALID[case]
    response = await api.post(f"{BASE}/calls/{action}", json=payload)
    error = assert_error(response, 422, "invalid_payload")
    assert error["details"] == {"ocppErrorCode": ocpp_code, "path": path, "rule": rule}
    assert action in error["message"], error
    assert named in error["message"], error
    await assert_nothing_sent_then_works(api, charge_point)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/reset", {"type": "Medium"}, "body.type"),
        ("/reset", {}, "body.type"),
        ("/unlock", {"connectorId": 0}, "body.connectorId"),
        ("/unlock", {"connectorId": "first"}, "body.connectorId"),
        ("/availability", {"connectorId": 1, "type": "Broken"}, "body.type"),
        ("/remote-start", {"idTag": ""}, "body.idTag"),
        ("/remote-start", {"idTag": "TAG", "connectorId": 1, "extra": 1}, "body.extra"),
        ("/remote-stop", {}, "body.transactionId"),
        ("/trigger", {"requestedMessage": "SignChargePointCertificate"}, "body.requestedMessage"),
        ("/data-transfer", {"vendorId": "v" * 256}, "body.vendorId"),
    ],
)
async def test_invalid_typed_body_is_not_sent(
    api: httpx.AsyncClient, charge_point: ChargePoint, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.post(f"{BASE}{path}", json=body)
    error = assert_error(response, 422, "validation_error")
    fields = [entry["field"] for entry in error["details"]["fields"]]
    assert field in fields, error
    assert field in error["message"], error
    await assert_nothing_sent_then_works(api, charge_point)


async def test_typed_remote_start_profile_is_checked_against_the_ocpp_schema(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    body = {"idTag": "TAG-0001", "chargingProfile": {"chargingProfileId": 1}}
    response = await api.post(f"{BASE}/remote-start", json=body)
    error = assert_error(response, 422, "invalid_payload")
    assert error["details"]["path"] == "payload.chargingProfile", error
    await assert_nothing_sent_then_works(api, charge_point)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[]", "body"),
        ('"Soft"', "body"),
        ("", "body"),
        ('{"type": "Soft"', "body"),
    ],
)
async def test_body_that_is_not_a_json_object(
    api: httpx.AsyncClient, charge_point: ChargePoint, text: str, field: str
) -> None:
    response = await post_json(api, f"{BASE}/calls/Reset", text)
    error = assert_error(response, 422, "validation_error")
    assert any(entry["field"].startswith(field) for entry in error["details"]["fields"]), error
    await assert_nothing_sent_then_works(api, charge_point)


@pytest.mark.parametrize("timeout", ["0", "-1", "301", "soon"])
async def test_invalid_timeout(
    api: httpx.AsyncClient, charge_point: ChargePoint, timeout: str
) -> None:
    response = await api.post(f"{BASE}/calls/Reset", params={"timeout": timeout}, json=RESET)
    error = assert_error(response, 422, "validation_error")
    assert [entry["field"] for entry in error["details"]["fields"]] == ["query.timeout"]
    await assert_nothing_sent_then_works(api, charge_point)


# Values a JSON-schema check lets through but that JSON cannot carry to a charge
# point (orjson, which writes the frame, refuses them; NaN/Infinity are not JSON at
# all, though Python's json module reads them). The operator must get a 422 naming
# the problem, not a 500, and nothing may be sent.
UNSENDABLE: dict[str, tuple[str, str]] = {
    "integer-above-64-bit": (
        "/calls/RemoteStopTransaction",
        '{"transactionId": 18446744073709551616}',
    ),
    "integer-below-64-bit": (
        "/calls/RemoteStopTransaction",
        '{"transactionId": -9223372036854775809}',
    ),
    "typed-integer-above-64-bit": ("/remote-stop", '{"transactionId": 18446744073709551616}'),
    "lone-surrogate": ("/calls/DataTransfer", '{"vendorId": "com.acme", "data": "\\ud800"}'),
    "typed-lone-surrogate": ("/data-transfer", '{"vendorId": "com.acme", "data": "\\udfff"}'),
    "nan": (
        "/calls/SetChargingProfile",
        '{"connectorId": 0, "csChargingProfiles": {"chargingProfileId": 1, "stackLevel": 0, '
        '"chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute", '
        '"chargingSchedule": {"chargingRateUnit": "W", '
        '"chargingSchedulePeriod": [{"startPeriod": 0, "limit": NaN}]}}}',
    ),
    "infinity": (
        "/calls/SetChargingProfile",
        '{"connectorId": 0, "csChargingProfiles": {"chargingProfileId": 1, "stackLevel": 0, '
        '"chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute", '
        '"chargingSchedule": {"chargingRateUnit": "W", '
        '"chargingSchedulePeriod": [{"startPeriod": 0, "limit": Infinity}]}}}',
    ),
}


@pytest.mark.parametrize("case", sorted(UNSENDABLE))
async def test_value_json_cannot_carry_is_refused(
    api: httpx.AsyncClient, charge_point: ChargePoint, case: str
) -> None:
    path, text = UNSENDABLE[case]
    response = await post_json(api, f"{BASE}{path}", text)
    assert response.status_code == 422, (response.status_code, response.text)
    code = response.json()["error"]["code"]
    assert code in ("invalid_payload", "validation_error"), response.text
    assert_error(response, 422, code)
    await assert_nothing_sent_then_works(api, charge_point)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/remote-stop", {"transactionId": True}),
        ("/unlock", {"connectorId": True}),
        ("/trigger", {"requestedMessage": "MeterValues", "connectorId": True}),
        ("/availability", {"connectorId": True, "type": "Operative"}),
    ],
)
async def test_typed_endpoint_does_not_take_a_boolean_for_an_integer(
    api: httpx.AsyncClient, charge_point: ChargePoint, path: str, body: dict[str, Any]
) -> None:
    # `true` is not transaction 1 nor connector 1: the OCPP schema says integer, and
    # the generic endpoint refuses it. A typed endpoint must not send
    # {"transactionId": 1} to a charge point because of a boolean.
    response = await api.post(f"{BASE}{path}", json=body)
    assert_error(response, 422, "validation_error")
    await assert_nothing_sent_then_works(api, charge_point)


# ----------------------------------------------------------------- 502


async def test_call_error_from_the_charge_point(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    async def refuse(kwargs: dict[str, Any]) -> Any:
        raise GenericError(
            description="connector 2 is locked by the EV",
            details={"connectorId": 2, "lock": {"state": "Locked", "retries": [1, 2]}},
        )

    charge_point.overrides["UnlockConnector"] = refuse
    response = await api.post(f"{BASE}/calls/UnlockConnector", json={"connectorId": 2})
    error = assert_error(response, 502, "call_error")
    assert error["details"] == {
        "code": "GenericError",
        "description": "connector 2 is locked by the EV",
        "details": {"connectorId": 2, "lock": {"state": "Locked", "retries": [1, 2]}},
    }
    assert "GenericError" in error["message"] and "locked" in error["message"], error
    # What went over the wire is what the API reports.
    (answer,) = charge_point.wire.answers_sent()
    assert answer[0] == 4 and answer[2:] == [
        "GenericError",
        "connector 2 is locked by the EV",
        {"connectorId": 2, "lock": {"state": "Locked", "retries": [1, 2]}},
    ]


async def test_call_error_with_the_specifications_spelling(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    async def refuse(kwargs: dict[str, Any]) -> Any:
        raise OccurenceConstraintViolationError(description="too many keys")

    charge_point.overrides["GetConfiguration"] = refuse
    response = await api.post(f"{BASE}/calls/GetConfiguration", json={"key": ["A", "B"]})
    error = assert_error(response, 502, "call_error")
    assert error["details"] == {
        "code": "OccurenceConstraintViolation",
        "description": "too many keys",
        "details": {},
    }


async def test_call_error_through_a_typed_endpoint(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    async def refuse(kwargs: dict[str, Any]) -> Any:
        raise GenericError(description="busy", details={"retryAfter": 30})

    charge_point.overrides["Reset"] = refuse
    response = await api.post(f"{BASE}/reset", json={"type": "Hard"})
    error = assert_error(response, 502, "call_error")
    assert error["details"] == {
        "code": "GenericError",
        "description": "busy",
        "details": {"retryAfter": 30},
    }


async def test_answer_that_breaks_the_response_schema(
    kilowatt: Application, api: httpx.AsyncClient
) -> None:
    async with raw_charge_point(kilowatt, CHARGE_POINT_ID) as ws:
        pending = asyncio.create_task(api.post(f"{BASE}/calls/GetLocalListVersion", json={}))
        frame = json.loads(await bounded(ws.recv()))
        assert frame[0] == 2 and frame[2:] == ["GetLocalListVersion", {}], frame
        await ws.send(json.dumps([3, frame[1], {"listVersion": "four"}]))
        response = await bounded(pending)
    error = assert_error(response, 502, "invalid_call_result")
    assert error["details"]["path"] == "payload.listVersion", error


# ----------------------------------------------------------------- 504


async def test_no_answer_within_the_requested_timeout(
    kilowatt: Application, api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    async def hang(kwargs: dict[str, Any]) -> Any:
        await asyncio.Event().wait()

    charge_point.overrides["Reset"] = hang
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await api.post(f"{BASE}/calls/Reset", params={"timeout": 0.5}, json=RESET)
    elapsed = loop.time() - started
    error = assert_error(response, 504, "timeout")
    assert "Reset" in error["message"], error
    assert 0.45 <= elapsed < CALL_TIMEOUT, f"504 after {elapsed:.3f} s, expected ~0.5 s"

    # The charge point is still usable afterwards.
    del charge_point.overrides["Reset"]
    response = await api.post(f"{BASE}/calls/ClearCache", json={})
    assert response.status_code == 200, response.text
    assert response.json() == ANSWERS["ClearCache"]


async def test_no_answer_within_the_default_call_timeout(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    async def hang(kwargs: dict[str, Any]) -> Any:
        await asyncio.Event().wait()

    charge_point.overrides["ClearCache"] = hang
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await api.post(f"{BASE}/clear-cache")
    elapsed = loop.time() - started
    assert_error(response, 504, "timeout")
    assert CALL_TIMEOUT - 0.05 <= elapsed < CALL_TIMEOUT + 1.5, f"504 after {elapsed:.3f} s"


# ----------------------------------------------------------------- 401 / 403


async def test_read_only_token_is_forbidden(
    kilowatt: Application, charge_point: ChargePoint
) -> None:
    _, secret = await kilowatt.services.tokens.create("dashboard", Role.READ)
    async with http_client(kilowatt, secret) as reader:
        for path, body in (("/calls/Reset", RESET), ("/reset", RESET), ("/clear-cache", None)):
            response = await reader.post(f"{BASE}{path}", json=body)
            error = assert_error(response, 403, "forbidden")
            assert "dashboard" in error["message"], error
        # The same token may read.
        response = await reader.get(BASE)
        assert response.status_code == 200, response.text
    assert charge_point.wire.calls_received() == []


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic b3BlcmF0b3I6c2VjcmV0",
        "Token kw_not-a-real-token",
        "Bearer kw_not-a-real-token",
    ],
)
async def test_missing_or_bad_token_is_unauthorized(
    kilowatt: Application, charge_point: ChargePoint, authorization: str | None
) -> None:
    async with http_client(kilowatt, None) as anonymous:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await anonymous.post(f"{BASE}/calls/Reset", json=RESET, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert charge_point.wire.calls_received() == []


async def test_revoked_token_is_unauthorized(
    kilowatt: Application, charge_point: ChargePoint
) -> None:
    _, secret = await kilowatt.services.tokens.create("temporary", Role.ADMIN)
    async with http_client(kilowatt, secret) as client:
        assert (await client.post(f"{BASE}/calls/Reset", json=RESET)).status_code == 200
        assert await kilowatt.services.tokens.revoke("temporary")
        response = await client.post(f"{BASE}/calls/Reset", json=RESET)
    assert_error(response, 401, "unauthorized")
    assert len(charge_point.wire.calls_received()) == 1


async def test_authentication_comes_before_validation(
    kilowatt: Application, charge_point: ChargePoint
) -> None:
    # An anonymous client learns nothing: not whether the charge point or the action
    # exists, not whether its payload would be valid.
    async with http_client(kilowatt, None) as anonymous:
        for path in ("/api/v1/charge-points/NOPE/calls/Reset", f"{BASE}/calls/Dance"):
            assert_error(await anonymous.post(path, json={"type": "Medium"}), 401, "unauthorized")


# ------------------------------------------------------- ordering and sharing


async def test_concurrent_calls_are_answered_in_turn(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    # OCPP-J allows one outstanding CALL: concurrent API requests queue behind it.
    release = asyncio.Event()

    async def slow_reset(kwargs: dict[str, Any]) -> Any:
        await release.wait()
        return call_result.Reset(status="Accepted")

    charge_point.overrides["Reset"] = slow_reset
    first = asyncio.create_task(api.post(f"{BASE}/calls/Reset", json=RESET))
    await eventually(lambda: len(charge_point.wire.calls_received()) == 1, "the first CALL")
    second = asyncio.create_task(api.post(f"{BASE}/calls/GetLocalListVersion", json={}))
    await asyncio.sleep(0.1)
    assert len(charge_point.wire.calls_received()) == 1, "a second CALL went out early"
    release.set()
    assert (await bounded(first)).json() == ANSWERS["Reset"]
    assert (await bounded(second)).json() == ANSWERS["GetLocalListVersion"]
    actions = [frame[2] for frame in charge_point.wire.calls_received()]
    assert actions == ["Reset", "GetLocalListVersion"]


async def test_charge_point_may_call_while_its_call_is_pending(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    # The charge point's own CALLs are served while the operator's CALL waits.
    release = asyncio.Event()

    async def slow(kwargs: dict[str, Any]) -> Any:
        await release.wait()
        return call_result.Reset(status="Accepted")

    charge_point.overrides["Reset"] = slow
    pending = asyncio.create_task(api.post(f"{BASE}/calls/Reset", json=RESET))
    await eventually(lambda: len(charge_point.wire.calls_received()) == 1, "the CALL")
    heartbeat = await bounded(charge_point.call(call.Heartbeat(), suppress=False))
    assert heartbeat.current_time.endswith("Z")
    release.set()
    assert (await bounded(pending)).status_code == 200
