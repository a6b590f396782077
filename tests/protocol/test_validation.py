"""Schema failures map to the CallError codes of OCPP-J 1.6 §4.2.3 (see validation.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kilowatt.ocpp16.schemas import schema_names
from kilowatt.protocol.errors import CallError, ErrorCode
from kilowatt.protocol.session import ProtocolSpec

METER_VALUE = {
    "timestamp": "2026-01-01T00:00:00Z",
    "sampledValue": [{"value": "10", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
}


def test_all_78_official_schemas_are_loaded(spec: ProtocolSpec) -> None:
    names = schema_names()
    assert len(names) == 78
    assert spec.validator.names() == frozenset(names)
    # 14 actions a charge point sends, 26 the Central System sends, DataTransfer both ways.
    assert len(spec.incoming) == 14
    assert len(spec.outgoing) == 26
    for action in spec.known:
        assert action in spec.validator and f"{action}Response" in spec.validator


@pytest.mark.parametrize(
    ("action", "payload", "code", "path"),
    [
        ("Heartbeat", {"extra": 1}, ErrorCode.FORMATION_VIOLATION, "payload"),
        ("BootNotification", {"chargePointVendor": "V"}, ErrorCode.PROTOCOL_ERROR, "payload"),
        (
            "BootNotification",
            {"chargePointVendor": "V" * 21, "chargePointModel": "M"},
            ErrorCode.TYPE_CONSTRAINT_VIOLATION,
            "payload.chargePointVendor",
        ),
        (
            "MeterValues",
            {"connectorId": "1", "meterValue": [METER_VALUE]},
            ErrorCode.TYPE_CONSTRAINT_VIOLATION,
            "payload.connectorId",
        ),
        (
            "MeterValues",
            {"connectorId": 1, "meterValue": []},
            ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
            "payload.meterValue",
        ),
        (
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"},
            ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
            "payload.status",
        ),
        (
            "StartTransaction",
            {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "yesterday"},
            ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
            "payload.timestamp",
        ),
    ],
)
def test_rule_to_error_code(
    spec: ProtocolSpec, action: str, payload: dict[str, Any], code: ErrorCode, path: str
) -> None:
    with pytest.raises(CallError) as caught:
        spec.validator.validate(action, payload)
    assert caught.value.code is code
    assert caught.value.details["path"] == path
    assert path in caught.value.description


def test_valid_payloads_pass(spec: ProtocolSpec) -> None:
    spec.validator.validate("Heartbeat", {})
    spec.validator.validate("MeterValues", {"connectorId": 0, "meterValue": [METER_VALUE]})
    spec.validator.validate("HeartbeatResponse", {"currentTime": "2026-01-01T00:00:00.000Z"})
