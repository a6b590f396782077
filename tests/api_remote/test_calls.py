"""Every CS→CP action through the REST API to a real ``ocpp`` charge point and back.

For each action: the API answers 200 with the charge point's CALLRESULT payload
(camelCase, as on the wire), and the CALL the charge point received carries exactly
the payload the operator sent — asserted on the raw frame, not on ``ocpp``'s
snake_case keyword arguments (those are checked too, through ``ocpp``'s own
conversion).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from ocpp.charge_point import camel_to_snake_case

from kilowatt.ocpp16.routes import CENTRAL_TO_CHARGE_POINT
from kilowatt.ocpp16.schemas import schema_validator
from tests.api_remote.charge_point import ANSWERS, ISSUER_KEY_HASH, ISSUER_NAME_HASH, ChargePoint
from tests.api_remote.conftest import CHARGE_POINT_ID

BASE = f"/api/v1/charge-points/{CHARGE_POINT_ID}"

CERTIFICATE = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBszCCAVmgAwIBAgIUPLrJ8zJvW2bX0tY8QX3m0yJ4XbQwCgYIKoZIzj0EAwIw\n"
    "LzEtMCsGA1UEAwwkS2lsb3dhdHQgVGVzdCBDZW50cmFsIFN5c3RlbSBSb290IENB\n"
    "MB4XDTI2MDMwMTAwMDAwMFoXDTM2MDIyNzAwMDAwMFowLzEtMCsGA1UEAwwkS2ls\n"
    "-----END CERTIFICATE-----\n"
)
SCHEDULE_PERIODS = [
    {"startPeriod": 0, "limit": 11000.0, "numberPhases": 3},
    {"startPeriod": 28800, "limit": 7400.5},
]

# A realistic, schema-valid request for each of the 26 CS→CP actions (camelCase).
PAYLOADS: dict[str, dict[str, Any]] = {
    "CancelReservation": {"reservationId": 17},
    "CertificateSigned": {"certificateChain": CERTIFICATE + CERTIFICATE},
    "ChangeAvailability": {"connectorId": 1, "type": "Inoperative"},
    "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "120"},
    "ClearCache": {},
    "ClearChargingProfile": {
        "id": 8,
        "connectorId": 1,
        "chargingProfilePurpose": "TxDefaultProfile",
        "stackLevel": 1,
    },
    "DataTransfer": {
        "vendorId": "com.acme.charging",
        "messageId": "SetTariff",
        "data": '{"pricePerKWh":0.35,"currency":"EUR"}',
    },
    "DeleteCertificate": {
        "certificateHashData": {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": ISSUER_NAME_HASH,
            "issuerKeyHash": ISSUER_KEY_HASH,
            "serialNumber": "3c5a9f01",
        }
    },
    "ExtendedTriggerMessage": {"requestedMessage": "SignChargePointCertificate"},
    "GetCompositeSchedule": {"connectorId": 1, "duration": 3600, "chargingRateUnit": "W"},
    "GetConfiguration": {"key": ["HeartbeatInterval", "NumberOfConnectors", "VendorSecretKey"]},
    "GetDiagnostics": {
        "location": "ftp://diagnostics.example.com/upload/CP1/",
        "retries": 3,
        "retryInterval": 60,
        "startTime": "2026-02-28T00:00:00Z",
        "stopTime": "2026-03-01T00:00:00Z",
    },
    "GetInstalledCertificateIds": {"certificateType": "CentralSystemRootCertificate"},
    "GetLocalListVersion": {},
    "GetLog": {
        "logType": "SecurityLog",
        "requestId": 101,
        "retries": 2,
        "retryInterval": 30,
        "log": {
            "remoteLocation": "https://logs.example.com/upload/CP1",
            "oldestTimestamp": "2026-02-01T00:00:00Z",
            "latestTimestamp": "2026-03-01T00:00:00Z",
        },
    },
    "InstallCertificate": {
        "certificateType": "ManufacturerRootCertificate",
        "certificate": CERTIFICATE,
    },
    "RemoteStartTransaction": {
        "connectorId": 1,
        "idTag": "TAG-0001",
        "chargingProfile": {
            "chargingProfileId": 7,
            "transactionId": 0,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
            },
        },
    },
    "RemoteStopTransaction": {"transactionId": 42},
    "ReserveNow": {
        "connectorId": 1,
        "expiryDate": "2026-03-01T12:00:00Z",
        "idTag": "TAG-0001",
        "parentIdTag": "FLEET-7",
        "reservationId": 17,
    },
    "Reset": {"type": "Soft"},
    "SendLocalList": {
        "listVersion": 5,
        "updateType": "Differential",
        "localAuthorizationList": [
            {
                "idTag": "TAG-0001",
                "idTagInfo": {
                    "status": "Accepted",
                    "expiryDate": "2027-01-01T00:00:00Z",
                    "parentIdTag": "FLEET-7",
                },
            },
            {"idTag": "TAG-0002", "idTagInfo": {"status": "Blocked"}},
            {"idTag": "TAG-0003"},
        ],
    },
    "SetChargingProfile": {
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": 8,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Recurring",
            "recurrencyKind": "Daily",
            "validFrom": "2026-03-01T00:00:00Z",
            "validTo": "2026-12-31T23:59:59Z",
            "chargingSchedule": {
                "duration": 86400,
                "startSchedule": "2026-03-01T00:00:00Z",
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": SCHEDULE_PERIODS,
                "minChargingRate": 1380.0,
            },
        },
    },
    "SignedUpdateFirmware": {
        "requestId": 202,
        "retries": 3,
        "retryInterval": 120,
        "firmware": {
            "location": "https://firmware.example.com/volt22/1.4.0.bin",
            "retrieveDateTime": "2026-03-02T02:00:00Z",
            "installDateTime": "2026-03-02T03:00:00Z",
            "signingCertificate": CERTIFICATE,
            "signature": "MEUCIQDzW1b0Y4r8Zk9yq3m3lH0bQ3u2oV5nq2b0r1vY5eT9SgIgV1x0b2n3m4",
        },
    },
    "TriggerMessage": {"requestedMessage": "StatusNotification", "connectorId": 1},
    "UnlockConnector": {"connectorId": 2},
    "UpdateFirmware": {
        "location": "https://firmware.example.com/volt22/1.3.0.bin",
        "retries": 2,
        "retrieveDate": "2026-03-05T02:00:00Z",
        "retryInterval": 300,
    },
}

# The typed convenience endpoints: (path, request body, action, OCPP payload sent).
TYPED: dict[str, tuple[str, dict[str, Any] | None, str, dict[str, Any]]] = {
    "remote-start": (
        "/remote-start",
        PAYLOADS["RemoteStartTransaction"],
        "RemoteStartTransaction",
        PAYLOADS["RemoteStartTransaction"],
    ),
    "remote-start-minimal": (
        "/remote-start",
        {"idTag": "TAG-0001"},
        "RemoteStartTransaction",
        {"idTag": "TAG-0001"},
    ),
    "remote-stop": (
        "/remote-stop",
        {"transactionId": 42},
        "RemoteStopTransaction",
        {"transactionId": 42},
    ),
    "reset-hard": ("/reset", {"type": "Hard"}, "Reset", {"type": "Hard"}),
    "reset-soft": ("/reset", {"type": "Soft"}, "Reset", {"type": "Soft"}),
    "unlock": ("/unlock", {"connectorId": 2}, "UnlockConnector", {"connectorId": 2}),
    "availability": (
        "/availability",
        {"connectorId": 0, "type": "Operative"},
        "ChangeAvailability",
        {"connectorId": 0, "type": "Operative"},
    ),
    "clear-cache": ("/clear-cache", None, "ClearCache", {}),
    "trigger": (
        "/trigger",
        {"requestedMessage": "MeterValues", "connectorId": 1},
        "TriggerMessage",
        {"requestedMessage": "MeterValues", "connectorId": 1},
    ),
    "trigger-no-connector": (
        "/trigger",
        {"requestedMessage": "Heartbeat"},
        "TriggerMessage",
        {"requestedMessage": "Heartbeat"},
    ),
    "data-transfer": (
        "/data-transfer",
        PAYLOADS["DataTransfer"],
        "DataTransfer",
        PAYLOADS["DataTransfer"],
    ),
    "data-transfer-vendor-only": (
        "/data-transfer",
        {"vendorId": "com.acme.charging"},
        "DataTransfer",
        {"vendorId": "com.acme.charging"},
    ),
}


def canonical(value: Any) -> str:
    """JSON text that tells 1 from 1.0 and True from 1, unlike ``==`` on decoded JSON."""
    return json.dumps(value, sort_keys=True)


def test_every_central_to_charge_point_action_has_a_payload_and_an_answer() -> None:
    assert set(PAYLOADS) == set(CENTRAL_TO_CHARGE_POINT)
    assert set(ANSWERS) == set(CENTRAL_TO_CHARGE_POINT)
    assert len(CENTRAL_TO_CHARGE_POINT) == 26


@pytest.mark.parametrize("action", sorted(PAYLOADS))
def test_payloads_and_answers_conform_to_the_official_schemas(action: str) -> None:
    validator = schema_validator()
    validator.validate(action, PAYLOADS[action])
    validator.validate(action + "Response", ANSWERS[action])


async def assert_round_trip(
    response: httpx.Response,
    cp: ChargePoint,
    action: str,
    sent: dict[str, Any],
) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()

    # Exactly one CALL reached the charge point, carrying exactly what was sent.
    calls = cp.wire.calls_received()
    assert len(calls) == 1, calls
    frame = calls[0]
    assert len(frame) == 4, frame
    _, unique_id, wire_action, wire_payload = frame
    assert isinstance(unique_id, str) and 0 < len(unique_id) <= 36, unique_id
    assert wire_action == action
    assert canonical(wire_payload) == canonical(sent)
    assert cp.received[action] == [camel_to_snake_case(sent)]

    # The API answers the charge point's CALLRESULT payload, exactly as on the wire.
    answers = cp.wire.answers_sent()
    assert len(answers) == 1, answers
    assert answers[0][:2] == [3, unique_id], answers[0]
    assert canonical(body) == canonical(answers[0][2]) == canonical(ANSWERS[action])


@pytest.mark.parametrize("action", sorted(PAYLOADS))
async def test_generic_call(api: httpx.AsyncClient, charge_point: ChargePoint, action: str) -> None:
    sent = PAYLOADS[action]
    response = await api.post(f"{BASE}/calls/{action}", json=sent)
    await assert_round_trip(response, charge_point, action, sent)


@pytest.mark.parametrize("case", sorted(TYPED))
async def test_typed_endpoint(api: httpx.AsyncClient, charge_point: ChargePoint, case: str) -> None:
    path, body, action, sent = TYPED[case]
    if body is None:
        response = await api.post(f"{BASE}{path}")
    else:
        response = await api.post(f"{BASE}{path}", json=body)
    await assert_round_trip(response, charge_point, action, sent)


async def test_typed_endpoint_takes_an_explicit_timeout(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    response = await api.post(f"{BASE}/reset", params={"timeout": 1.5}, json={"type": "Hard"})
    await assert_round_trip(response, charge_point, "Reset", {"type": "Hard"})


async def test_calls_in_a_row_each_get_their_own_answer(
    api: httpx.AsyncClient, charge_point: ChargePoint
) -> None:
    for action in ("GetLocalListVersion", "Reset", "GetConfiguration", "ClearCache"):
        response = await api.post(f"{BASE}/calls/{action}", json=PAYLOADS[action])
        assert response.status_code == 200, response.text
        assert response.json() == ANSWERS[action]
    actions = [frame[2] for frame in charge_point.wire.calls_received()]
    assert actions == ["GetLocalListVersion", "Reset", "GetConfiguration", "ClearCache"]
    ids = [frame[1] for frame in charge_point.wire.calls_received()]
    assert len(set(ids)) == len(ids), ids
