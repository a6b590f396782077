"""The key catalogue, value checks, drift, capabilities and redaction (pure functions)."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest
from ocpp.v16.enums import ConfigurationKey, Measurand, Phase

from kilowatt.domain.configuration import (
    CATALOGUE,
    MEASURANDS,
    PHASES,
    REDACTED,
    SECRET_FRAME,
    Access,
    DesiredValue,
    DriftStatus,
    InvalidValue,
    NotDesirable,
    Profile,
    ReadOnlyKey,
    ReportedKey,
    ValueType,
    capabilities,
    check_desired,
    check_value,
    compute_drift,
    effective_desired,
    is_secret,
    redact,
    redact_frame,
    same_value,
)
from kilowatt.logs import configure_logging

T0 = datetime(2026, 3, 1, tzinfo=UTC)
KEY_20_BYTES = "00112233445566778899aabbccddeeff00112233"


def reported(key: str, value: str | None, *, readonly: bool = False) -> ReportedKey:
    return ReportedKey(key, value, readonly, T0)


# ----------------------------------------------------------------- catalogue


# ISO 15118 Plug & Charge keys (a later whitepaper) are not in the catalogue.
ISO_15118 = {
    "CentralContractValidationAllowed",
    "CertSigningWaitMinimum",
    "CertSigningRepeatTimes",
    "ContractValidationOffline",
    "ISO15118PnCEnabled",
}


def test_catalogue_has_every_standard_key() -> None:
    # The ocpp package's list: §9.1-§9.4 and the Security Whitepaper's keys.
    expected = {key.value for key in ConfigurationKey} - ISO_15118
    # CertificateSignedMaxChainSize and CertificateStoreMaxLength are listed by ocpp
    # with the ISO 15118 keys; they are the Security Whitepaper's.
    assert expected <= set(CATALOGUE)
    assert set(CATALOGUE) - expected == {"SupportedFileTransferProtocols"}  # errata v4.0


def test_catalogue_facts() -> None:
    heartbeat = CATALOGUE["HeartbeatInterval"]
    assert heartbeat.type is ValueType.INTEGER
    assert heartbeat.access is Access.READ_WRITE and heartbeat.required
    assert heartbeat.unit == "seconds" and heartbeat.reference == "OCPP 1.6 §9.1"
    assert CATALOGUE["NumberOfConnectors"].access is Access.READ_ONLY
    assert CATALOGUE["SupportedFeatureProfiles"].type is ValueType.CSL
    assert CATALOGUE["LightIntensity"].unit == "%"
    assert (CATALOGUE["LightIntensity"].minimum, CATALOGUE["LightIntensity"].maximum) == (0, 100)
    assert CATALOGUE["MaxEnergyOnInvalidId"].unit == "Wh"
    assert CATALOGUE["AuthorizeRemoteTxRequests"].read_only_on_some
    assert CATALOGUE["SendLocalListMaxLength"].profile is Profile.LOCAL_AUTH_LIST_MANAGEMENT
    assert CATALOGUE["ReserveConnectorZeroSupported"].profile is Profile.RESERVATION
    assert CATALOGUE["ChargeProfileMaxStackLevel"].profile is Profile.SMART_CHARGING
    assert CATALOGUE["SupportedFileTransferProtocols"].profile is Profile.FIRMWARE_MANAGEMENT
    authorization_key = CATALOGUE["AuthorizationKey"]
    assert authorization_key.access is Access.WRITE_ONLY and authorization_key.secret
    assert authorization_key.profile is Profile.SECURITY
    assert [key.name for key in CATALOGUE.values() if key.secret] == ["AuthorizationKey"]
    assert (CATALOGUE["SecurityProfile"].minimum, CATALOGUE["SecurityProfile"].maximum) == (0, 3)
    for key in CATALOGUE.values():
        assert key.reference.startswith("OCPP 1.6"), key
        assert key.describe()["key"] == key.name


def test_measurands_and_phases_match_the_specification() -> None:
    assert {m.value for m in Measurand} == MEASURANDS
    assert {p.value for p in Phase} == PHASES


# -------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("key", "value", "sent"),
    [
        ("HeartbeatInterval", " 0300 ", "300"),
        ("HeartbeatInterval", "0", "0"),
        ("LocalPreAuthorize", "TRUE", "true"),
        ("LocalPreAuthorize", "False", "false"),
        ("LightIntensity", "100", "100"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register, Voltage.L1-N", None),
        ("MeterValuesSampledData", "", ""),
        ("ConnectorPhaseRotation", "0.RST, 1.NotApplicable,2.TSR", "0.RST,1.NotApplicable,2.TSR"),
        ("ConnectorPhaseRotation", "Unknown", "Unknown"),
        ("CpoName", "Kilowatt Charging GmbH", "Kilowatt Charging GmbH"),
        ("SecurityProfile", "2", "2"),
        ("AuthorizationKey", KEY_20_BYTES, KEY_20_BYTES),
        ("AuthorizationKey", "0123456789ABCDEF0123456789abcdef", None),  # 16 bytes
        ("VendorAnything", " any text, kept as it is ", " any text, kept as it is "),
    ],
)
def test_valid_values(key: str, value: str, sent: str | None) -> None:
    expected = sent if sent is not None else value.replace(", ", ",")
    assert check_value(key, value) == expected


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("HeartbeatInterval", "5m", "whole number"),
        ("HeartbeatInterval", "1.5", "whole number"),
        ("WebSocketPingInterval", "-1", "at least 0"),
        ("LightIntensity", "101", "at most 100"),
        ("SecurityProfile", "4", "at most 3"),
        ("StopTransactionOnInvalidId", "1", "true or false"),
        ("StopTxnSampledData", "Energy.Active.Import.Register,,SoC", "empty"),
        ("StopTxnAlignedData", "Voltage.L4", "not a measurand"),
        ("ConnectorPhaseRotation", "x.RST", "connector"),
        ("ConnectorPhaseRotation", "1.ABC", "phase rotation"),
        ("AuthorizationKey", "0123456789abcdef", "16 to 20 bytes"),  # 8 bytes
        ("AuthorizationKey", KEY_20_BYTES + "aa", "16 to 20 bytes"),  # 21 bytes
        ("AuthorizationKey", KEY_20_BYTES[:-1], "even number"),
        ("AuthorizationKey", "not-hex-not-hex-not-hex-not-hex!", "hexadecimal"),
    ],
)
def test_invalid_values(key: str, value: str, reason: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        check_value(key, value)
    assert reason in raised.value.message
    assert raised.value.details["key"] == key


def test_lengths_of_the_schema() -> None:
    with pytest.raises(InvalidValue, match="1 to 50"):
        check_value("K" * 51, "x")
    with pytest.raises(InvalidValue, match="at most 500"):
        check_value("VendorKey", "x" * 501)
    assert check_value("VendorKey", "x" * 500) == "x" * 500


def test_an_invalid_secret_is_never_repeated() -> None:
    with pytest.raises(InvalidValue) as raised:
        check_value("AuthorizationKey", "tooshort-secret")
    assert "tooshort-secret" not in str(raised.value)
    assert "tooshort-secret" not in str(raised.value.details)
    assert raised.value.details["value"] == REDACTED


def test_read_only_keys() -> None:
    with pytest.raises(ReadOnlyKey) as raised:
        check_value("NumberOfConnectors", "3")
    assert raised.value.details["reference"] == "OCPP 1.6 §9.1"
    with pytest.raises(ReadOnlyKey):
        check_value("ChargeProfileMaxStackLevel", "3")
    # Read-only because the charge point reports it so (AuthorizeRemoteTxRequests may
    # be R or RW; any vendor key).
    for key in ("AuthorizeRemoteTxRequests", "VendorKey"):
        assert check_value(key, "true") == "true"
        with pytest.raises(ReadOnlyKey):
            check_value(key, "true", reported={key: reported(key, "false", readonly=True)})


def test_what_the_charge_point_reported_is_taken_into_account() -> None:
    facts = {
        "MeterValuesSampledDataMaxLength": reported("MeterValuesSampledDataMaxLength", "2"),
        "SecurityProfile": reported("SecurityProfile", "2"),
    }
    assert check_value("MeterValuesSampledData", "Voltage,SoC", reported=facts)
    with pytest.raises(InvalidValue, match="at most 2"):
        check_value("MeterValuesSampledData", "Voltage,SoC,Frequency", reported=facts)
    assert check_value("SecurityProfile", "3", reported=facts) == "3"
    with pytest.raises(InvalidValue, match="only be raised"):
        check_value("SecurityProfile", "1", reported=facts)


def test_desired_values() -> None:
    assert check_desired("HeartbeatInterval", "060") == "60"
    assert check_desired("VendorKey", "x") == "x"
    with pytest.raises(ReadOnlyKey):
        check_desired("SupportedFeatureProfiles", "Core")
    with pytest.raises(NotDesirable):
        check_desired("AuthorizationKey", KEY_20_BYTES)
    with pytest.raises(NotDesirable):
        check_desired("authorizationkey", KEY_20_BYTES)


def test_same_value() -> None:
    assert same_value("HeartbeatInterval", "0300", "300")
    assert not same_value("HeartbeatInterval", "300", "301")
    assert same_value("LocalPreAuthorize", "True", "true")
    assert same_value("MeterValuesSampledData", "SoC, Voltage", "Voltage,SoC")
    assert not same_value("VendorKey", "On", "on")
    assert same_value("VendorKey", None, None)
    assert not same_value("VendorKey", None, "")


# --------------------------------------------------------------------- drift


def test_per_charge_point_values_win_over_the_template() -> None:
    desired = effective_desired(
        "fleet", {"HeartbeatInterval": "900", "VendorMode": "eco"}, {"HeartbeatInterval": "60"}
    )
    assert desired == {
        "HeartbeatInterval": DesiredValue("HeartbeatInterval", "60", "charge-point"),
        "VendorMode": DesiredValue("VendorMode", "eco", "template", "fleet"),
    }
    assert effective_desired(None, {}, {}) == {}


def test_drift_statuses() -> None:
    desired = effective_desired(
        "fleet",
        {
            "HeartbeatInterval": "0300",
            "MeterValueSampleInterval": "30",
            "VendorA": "1",
            "VendorB": "1",
            "VendorC": "1",
            "ConnectionTimeOut": "120",
        },
        {},
    )
    state = {
        "HeartbeatInterval": reported("HeartbeatInterval", "300"),
        "MeterValueSampleInterval": reported("MeterValueSampleInterval", "60"),
        "VendorB": ReportedKey("VendorB", None, None, T0, unknown=True),
        "VendorC": reported("VendorC", "0", readonly=True),
        "ConnectionTimeOut": reported("ConnectionTimeOut", "90"),
    }
    drift = compute_drift(desired, state, {"ConnectionTimeOut": "120"})
    statuses = {entry.key: entry.status for entry in drift}
    assert statuses == {
        "MeterValueSampleInterval": DriftStatus.DIFFERS,
        "VendorA": DriftStatus.NOT_REPORTED,
        "VendorB": DriftStatus.UNKNOWN_KEY,
        "VendorC": DriftStatus.READ_ONLY,
        "ConnectionTimeOut": DriftStatus.REBOOT_PENDING,
    }
    applicable = {entry.key for entry in drift if entry.applicable}
    assert applicable == {"MeterValueSampleInterval", "VendorA"}
    differs = next(entry for entry in drift if entry.key == "MeterValueSampleInterval")
    assert (differs.desired, differs.reported, differs.template) == ("30", "60", "fleet")


# -------------------------------------------------------------- capabilities


def test_capabilities() -> None:
    found = capabilities(
        [
            reported("SupportedFeatureProfiles", "Core, SmartCharging,Reservation"),
            reported("HeartbeatInterval", " 300"),
            reported("SendLocalListMaxLength", "oops"),
            reported("ReserveConnectorZeroSupported", "TRUE"),
            reported("ChargingScheduleAllowedChargingRateUnit", "Current,Power"),
            ReportedKey("ChargeProfileMaxStackLevel", None, None, T0, unknown=True),
        ]
    )
    assert found.supported_feature_profiles == {"Core", "SmartCharging", "Reservation"}
    assert found.supports("Reservation") is True
    assert found.supports("FirmwareManagement") is False
    assert found.heartbeat_interval == 300
    assert found.send_local_list_max_length is None  # not a number
    assert found.reserve_connector_zero_supported is True
    assert found.charging_schedule_allowed_charging_rate_unit == {"Current", "Power"}
    assert found.charge_profile_max_stack_level is None
    assert capabilities([]).supports("Core") is None
    assert capabilities([]).as_dict()["heartbeat_interval"] is None


# ----------------------------------------------------------------- redaction


def test_redact_change_configuration() -> None:
    payload = {"key": "AuthorizationKey", "value": KEY_20_BYTES}
    assert redact("ChangeConfiguration", payload) == {"key": "AuthorizationKey", "value": REDACTED}
    assert payload["value"] == KEY_20_BYTES  # a copy, the original untouched
    assert redact("ChangeConfiguration", {"key": "authorizationKEY", "value": "x"})["value"] == (
        REDACTED
    )
    plain = {"key": "HeartbeatInterval", "value": "60"}
    assert redact("ChangeConfiguration", plain) is plain


def test_redact_get_configuration_answer() -> None:
    answer = {
        "configurationKey": [
            {"key": "HeartbeatInterval", "readonly": False, "value": "60"},
            {"key": "AuthorizationKey", "readonly": False, "value": KEY_20_BYTES},
            {"key": "CpoName", "readonly": False},
        ],
        "unknownKey": ["X"],
    }
    redacted = redact("GetConfiguration", answer)
    assert redacted["configurationKey"][1] == {
        "key": "AuthorizationKey",
        "readonly": False,
        "value": REDACTED,
    }
    assert redacted["configurationKey"][0] is answer["configurationKey"][0]
    assert redacted["unknownKey"] == ["X"]
    request = {"key": ["AuthorizationKey"]}
    assert redact("GetConfiguration", request) is request
    other = {"type": "Soft"}
    assert redact("Reset", other) is other
    assert is_secret("AUTHORIZATIONKEY") and not is_secret("CpoName")


def test_redact_frame() -> None:
    change = f'[2,"m1","ChangeConfiguration",{{"key":"AuthorizationKey","value":"{KEY_20_BYTES}"}}]'
    assert json.loads(redact_frame(None, change)) == [
        2,
        "m1",
        "ChangeConfiguration",
        {"key": "AuthorizationKey", "value": REDACTED},
    ]
    report = json.dumps(
        [
            3,
            "m2",
            {"configurationKey": [{"key": "AuthorizationKey", "readonly": False, "value": "ab"}]},
        ]
    )
    assert (
        "ab"
        not in json.loads(redact_frame("GetConfiguration", report))[2]["configurationKey"][0][
            "value"
        ]
    )
    # Nothing to hide: the very same text.
    plain = '[2,"m3","ChangeConfiguration",{"key":"HeartbeatInterval","value":"60"}]'
    assert redact_frame(None, plain) is plain
    request = '[2,"m4","GetConfiguration",{"key":["AuthorizationKey"]}]'
    assert redact_frame(None, request) is request
    # Cut by a size limit, an answer whose action is not known, a CALLERROR: whole.
    assert redact_frame(None, change[:60]) == SECRET_FRAME
    assert redact_frame(None, report) == SECRET_FRAME
    assert redact_frame(None, '[4,"m5","GenericError","AuthorizationKey x",{}]') == SECRET_FRAME


def test_logging_never_shows_a_secret_frame() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging("debug")
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        frame = (
            f'[2,"m1","ChangeConfiguration",{{"key":"AuthorizationKey","value":"{KEY_20_BYTES}"}}]'
        )
        logging.getLogger("websockets.server").debug("> TEXT %r", frame)
        logging.getLogger("websockets.server").debug("> TEXT %r", '[3,"m2",{"status":"Accepted"}]')
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    output = stream.getvalue()
    assert KEY_20_BYTES not in output
    assert "content not logged" in output
    assert "Accepted" in output  # other frames are logged as they are
