"""Charge point configuration: the OCPP 1.6 key catalogue, value rules, drift, redaction.

Pure functions and records, standard library only; the service
(:mod:`kilowatt.services.configuration`) does the I/O.

Sources of the catalogue:

* OCPP 1.6 edition 2, §9 "Standard Configuration Key Names & Values": §9.1 Core
  Profile, §9.2 Local Auth List Management Profile, §9.3 Reservation Profile, §9.4
  Smart Charging Profile. Each key has *Required/optional*, *Accessibility* (R, RW),
  *Type* (boolean, integer, CSL = comma separated list, string) and, for some, a
  *Unit*. Per §9 a boolean is the text ``true`` or ``false``.
* OCPP 1.6 errata sheet v4.0: SupportedFileTransferProtocols (read-only CSL of FTP,
  FTPS, HTTP, HTTPS, SFTP), for GetDiagnostics and UpdateFirmware locations.
* Security Whitepaper ("Improved security for OCPP 1.6-J"), configuration keys:
  AdditionalRootCertificateCheck, AuthorizationKey, CertificateSignedMaxChainSize,
  CertificateStoreMaxLength, CpoName, SecurityProfile.
* OCPP-J 1.6 JSON schemas: ChangeConfiguration.req ``key`` at most 50 characters,
  ``value`` at most 500 (§5.3); GetConfiguration.conf the same for what it reports
  (§5.8).

Keys not in the catalogue are *vendor-specific*: allowed, and kept as plain strings
within the schema's lengths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "CATALOGUE",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_LENGTH",
    "MEASURANDS",
    "PHASES",
    "REDACTED",
    "SECRET_FRAME",
    "Access",
    "Capabilities",
    "ChangeRecord",
    "ChangeStatus",
    "ConfigurationError",
    "ConfigurationTemplate",
    "DesiredValue",
    "DriftEntry",
    "DriftStatus",
    "InvalidValue",
    "KeyDefinition",
    "NotDesirable",
    "Profile",
    "ReadOnlyKey",
    "ReportedKey",
    "SyncState",
    "ValueType",
    "capabilities",
    "check_desired",
    "check_value",
    "compute_drift",
    "definition",
    "effective_desired",
    "is_secret",
    "mentions_secret",
    "redact",
    "redact_frame",
    "same_value",
]

# OCPP-J 1.6 schemas: ChangeConfiguration.req key maxLength 50, value maxLength 500.
MAX_KEY_LENGTH = 50
MAX_VALUE_LENGTH = 500
REDACTED = "<redacted>"


class ValueType(StrEnum):
    """OCPP 1.6 §9: the types a configuration value has (always sent as text)."""

    BOOLEAN = "boolean"
    INTEGER = "integer"
    CSL = "CSL"
    STRING = "string"


class Access(StrEnum):
    """OCPP 1.6 §9 *Accessibility*; W (write-only) comes from the Security Whitepaper."""

    READ_ONLY = "R"
    READ_WRITE = "RW"
    WRITE_ONLY = "W"


class Profile(StrEnum):
    """The feature profile a key belongs to (§9.1-§9.4; Security Whitepaper)."""

    CORE = "Core"
    LOCAL_AUTH_LIST_MANAGEMENT = "LocalAuthListManagement"
    RESERVATION = "Reservation"
    SMART_CHARGING = "SmartCharging"
    FIRMWARE_MANAGEMENT = "FirmwareManagement"
    # Not a SupportedFeatureProfiles value: the Security Whitepaper's keys.
    SECURITY = "Security"


class ChangeStatus(StrEnum):
    """OCPP 1.6 ConfigurationStatus, the answer to ChangeConfiguration (§5.3)."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    REBOOT_REQUIRED = "RebootRequired"
    NOT_SUPPORTED = "NotSupported"


# OCPP 1.6 Measurand and Phase enumerations (SampledValue, §7): the items of the
# MeterValues/StopTxn *Data keys, "where applicable combined with the optional
# phase; for instance: Voltage.L1" (§9.1 MeterValuesSampledData).
MEASURANDS = frozenset(
    {
        "Current.Export",
        "Current.Import",
        "Current.Offered",
        "Energy.Active.Export.Register",
        "Energy.Active.Import.Register",
        "Energy.Reactive.Export.Register",
        "Energy.Reactive.Import.Register",
        "Energy.Active.Export.Interval",
        "Energy.Active.Import.Interval",
        "Energy.Reactive.Export.Interval",
        "Energy.Reactive.Import.Interval",
        "Frequency",
        "Power.Active.Export",
        "Power.Active.Import",
        "Power.Factor",
        "Power.Offered",
        "Power.Reactive.Export",
        "Power.Reactive.Import",
        "RPM",
        "SoC",
        "Temperature",
        "Voltage",
    }
)
PHASES = frozenset({"L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1"})

# §9.1 ConnectorPhaseRotation: per connector, "0.RST, 1.RST, 2.RTS".
PHASE_ROTATIONS = frozenset({"NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR"})
# §9.1 SupportedFeatureProfiles (the profile names of OCPP 1.6 §3).
FEATURE_PROFILES = frozenset(
    {
        "Core",
        "FirmwareManagement",
        "LocalAuthListManagement",
        "Reservation",
        "SmartCharging",
        "RemoteTrigger",
    }
)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def _measurand_item(item: str) -> str | None:
    if item in MEASURANDS:
        return None
    measurand, _, phase = item.rpartition(".")
    if measurand in MEASURANDS and phase in PHASES:
        return None
    return (
        f"{item!r} is not a measurand (optionally with a phase, e.g. Voltage.L1); "
        f"measurands: {', '.join(sorted(MEASURANDS))}"
    )


def _phase_rotation_item(item: str) -> str | None:
    connector, dot, rotation = item.partition(".")
    if not dot:
        connector, rotation = "", item
    if connector and not connector.isdigit():
        return f"{item!r}: the connector before the '.' must be a number, e.g. 1.RST"
    if rotation not in PHASE_ROTATIONS:
        return (
            f"{item!r}: the phase rotation must be one of {', '.join(sorted(PHASE_ROTATIONS))} "
            "(per connector: 0.RST, 1.RST, 2.RTS)"
        )
    return None


def _authorization_key(value: str) -> str | None:
    # Security Whitepaper, AuthorizationKey: "minimal length: 16 bytes ...
    # Hexadecimal represented (20 bytes maximum, represented as a string of up to
    # 40 hexadecimal digits)": 32-40 hex digits, two per byte.
    if not _HEX.fullmatch(value) or len(value) % 2:
        return (
            "the AuthorizationKey is the hexadecimal representation of the password: an even "
            "number of hexadecimal digits (Security Whitepaper)"
        )
    if not 32 <= len(value) <= 40:
        return (
            f"the AuthorizationKey has {len(value) // 2} bytes; the Security Whitepaper "
            "requires 16 to 20 bytes (32 to 40 hexadecimal digits)"
        )
    return None


@dataclass(frozen=True, slots=True)
class KeyDefinition:
    """One standard configuration key, as the specification defines it."""

    name: str
    profile: Profile
    type: ValueType
    access: Access
    required: bool
    reference: str
    description: str
    unit: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    # Allowed values: of a CSL's items, or of a string.
    allowed: frozenset[str] | None = None
    # A per-item (CSL) or per-value (string) rule: the reason it is wrong, or None.
    check: Callable[[str], str | None] | None = field(default=None, compare=False)
    # The key holding the largest number of items this CSL may have.
    max_items_key: str | None = None
    # §9.1 AuthorizeRemoteTxRequests: "R or RW. Choice is up to Charge Point
    # implementation." A charge point's own report decides.
    read_only_on_some: bool = False

    @property
    def writable(self) -> bool:
        return self.access is not Access.READ_ONLY

    @property
    def secret(self) -> bool:
        """Write-only: never read back, stored or logged in clear."""
        return self.access is Access.WRITE_ONLY

    def describe(self) -> dict[str, Any]:
        """For the API and CLI: what the catalogue says about this key."""
        return {
            "key": self.name,
            "profile": self.profile.value,
            "type": self.type.value,
            "access": self.access.value,
            "required": self.required,
            "unit": self.unit,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "allowed": sorted(self.allowed) if self.allowed is not None else None,
            "read_only_on_some": self.read_only_on_some,
            "reference": self.reference,
            "description": self.description,
        }


def _key(profile: Profile, reference: str) -> Callable[..., KeyDefinition]:
    def make(
        name: str, type_: ValueType, access: Access, required: bool, text: str, **kw: Any
    ) -> KeyDefinition:
        return KeyDefinition(name, profile, type_, access, required, reference, text, **kw)

    return make


_core = _key(Profile.CORE, "OCPP 1.6 §9.1")
_local = _key(Profile.LOCAL_AUTH_LIST_MANAGEMENT, "OCPP 1.6 §9.2")
_reservation = _key(Profile.RESERVATION, "OCPP 1.6 §9.3")
_smart = _key(Profile.SMART_CHARGING, "OCPP 1.6 §9.4")
_firmware = _key(Profile.FIRMWARE_MANAGEMENT, "OCPP 1.6 errata v4.0")
_security = _key(Profile.SECURITY, "OCPP 1.6 Security Whitepaper")
_R, _RW, _W = Access.READ_ONLY, Access.READ_WRITE, Access.WRITE_ONLY
_B, _I, _C, _S = ValueType.BOOLEAN, ValueType.INTEGER, ValueType.CSL, ValueType.STRING
_REQUIRED, _OPTIONAL = True, False

# One entry per key: name, type, accessibility, required, description, then unit,
# range, allowed values and item rules where the specification gives them.
# fmt: off
_KEYS: tuple[KeyDefinition, ...] = (
    # §9.1 Core Profile
    _core("AllowOfflineTxForUnknownId", _B, _RW, _OPTIONAL,
          "Unknown Offline Authorization enabled (the key exists when it is supported)."),
    _core("AuthorizationCacheEnabled", _B, _RW, _OPTIONAL,
          "Authorization Cache enabled (the key exists when it is supported)."),
    _core("AuthorizeRemoteTxRequests", _B, _RW, _REQUIRED,
          "Authorize RemoteStartTransaction like a local start. R or RW, up to the charge "
          "point.", read_only_on_some=True),
    _core("BlinkRepeat", _I, _RW, _OPTIONAL,
          "Number of times to blink the charge point lighting when signalling.",
          unit="times", minimum=0),
    _core("ClockAlignedDataInterval", _I, _RW, _REQUIRED,
          "Size of the clock-aligned data interval; 0: no clock-aligned data.",
          unit="seconds", minimum=0),
    _core("ConnectionTimeOut", _I, _RW, _REQUIRED,
          "From Preparing until a transaction whose cable was not plugged in is cancelled.",
          unit="seconds", minimum=0),
    _core("ConnectorPhaseRotation", _C, _RW, _REQUIRED,
          "Phase rotation per connector, e.g. 0.RST,1.RST,2.RTS.",
          check=_phase_rotation_item, max_items_key="ConnectorPhaseRotationMaxLength"),
    _core("ConnectorPhaseRotationMaxLength", _I, _R, _OPTIONAL,
          "Maximum number of items in ConnectorPhaseRotation.", minimum=0),
    _core("GetConfigurationMaxKeys", _I, _R, _REQUIRED,
          "Maximum number of keys in one GetConfiguration.req.", minimum=0),
    _core("HeartbeatInterval", _I, _RW, _REQUIRED,
          "Inactivity after which the charge point sends Heartbeat.",
          unit="seconds", minimum=0),
    _core("LightIntensity", _I, _RW, _OPTIONAL,
          "Percentage of the maximum intensity of the charge point lighting.",
          unit="%", minimum=0, maximum=100),
    _core("LocalAuthorizeOffline", _B, _RW, _REQUIRED,
          "Authorize locally (cache, local list) while offline."),
    _core("LocalPreAuthorize", _B, _RW, _REQUIRED,
          "Start on a local authorization without waiting for the Central System."),
    _core("MaxEnergyOnInvalidId", _I, _RW, _OPTIONAL,
          "Energy delivered after the id was invalidated during a transaction.",
          unit="Wh", minimum=0),
    _core("MeterValuesAlignedData", _C, _RW, _REQUIRED,
          "Clock-aligned measurands in MeterValues.req.",
          check=_measurand_item, max_items_key="MeterValuesAlignedDataMaxLength"),
    _core("MeterValuesAlignedDataMaxLength", _I, _R, _OPTIONAL,
          "Maximum number of items in MeterValuesAlignedData.", minimum=0),
    _core("MeterValuesSampledData", _C, _RW, _REQUIRED,
          "Sampled measurands in MeterValues.req, every MeterValueSampleInterval.",
          check=_measurand_item, max_items_key="MeterValuesSampledDataMaxLength"),
    _core("MeterValuesSampledDataMaxLength", _I, _R, _OPTIONAL,
          "Maximum number of items in MeterValuesSampledData.", minimum=0),
    _core("MeterValueSampleInterval", _I, _RW, _REQUIRED,
          "Interval between sampled meter values during a transaction; 0: none.",
          unit="seconds", minimum=0),
    _core("MinimumStatusDuration", _I, _RW, _OPTIONAL,
          "How long a status must be stable before StatusNotification is sent.",
          unit="seconds", minimum=0),
    _core("NumberOfConnectors", _I, _R, _REQUIRED,
          "Number of physical charging connectors.", minimum=0),
    _core("ResetRetries", _I, _RW, _REQUIRED,
          "Number of times to retry an unsuccessful reset.", unit="times", minimum=0),
    _core("StopTransactionOnEVSideDisconnect", _B, _RW, _REQUIRED,
          "Stop the transaction when the cable is unplugged from the EV."),
    _core("StopTransactionOnInvalidId", _B, _RW, _REQUIRED,
          "Stop the transaction when StartTransaction.conf is not Accepted."),
    _core("StopTxnAlignedData", _C, _RW, _REQUIRED,
          "Clock-aligned measurands in StopTransaction.req transactionData.",
          check=_measurand_item, max_items_key="StopTxnAlignedDataMaxLength"),
    _core("StopTxnAlignedDataMaxLength", _I, _R, _OPTIONAL,
          "Maximum number of items in StopTxnAlignedData.", minimum=0),
    _core("StopTxnSampledData", _C, _RW, _REQUIRED,
          "Sampled measurands in StopTransaction.req transactionData.",
          check=_measurand_item, max_items_key="StopTxnSampledDataMaxLength"),
    _core("StopTxnSampledDataMaxLength", _I, _R, _OPTIONAL,
          "Maximum number of items in StopTxnSampledData.", minimum=0),
    _core("SupportedFeatureProfiles", _C, _R, _REQUIRED,
          "The feature profiles the charge point supports.",
          allowed=FEATURE_PROFILES, max_items_key="SupportedFeatureProfilesMaxLength"),
    _core("SupportedFeatureProfilesMaxLength", _I, _R, _OPTIONAL,
          "Maximum number of items in SupportedFeatureProfiles.", minimum=0),
    _core("TransactionMessageAttempts", _I, _RW, _REQUIRED,
          "Attempts at a transaction message the Central System failed to process.",
          unit="times", minimum=0),
    _core("TransactionMessageRetryInterval", _I, _RW, _REQUIRED,
          "Wait before a retry, multiplied by the number of earlier attempts.",
          unit="seconds", minimum=0),
    _core("UnlockConnectorOnEVSideDisconnect", _B, _RW, _REQUIRED,
          "Unlock the connector when the cable is unplugged at the EV."),
    _core("WebSocketPingInterval", _I, _RW, _OPTIONAL,
          "WebSocket ping interval; 0: no pings (negative values are rejected).",
          unit="seconds", minimum=0),
    # §9.2 Local Auth List Management Profile
    _local("LocalAuthListEnabled", _B, _RW, _REQUIRED,
           "Whether the Local Authorization List is enabled."),
    _local("LocalAuthListMaxLength", _I, _R, _REQUIRED,
           "Maximum number of identifications in the Local Authorization List.", minimum=0),
    _local("SendLocalListMaxLength", _I, _R, _REQUIRED,
           "Maximum number of identifications in one SendLocalList.req.", minimum=0),
    # §9.3 Reservation Profile
    _reservation("ReserveConnectorZeroSupported", _B, _R, _OPTIONAL,
                 "Reservations on connector 0 are supported."),
    # §9.4 Smart Charging Profile
    _smart("ChargeProfileMaxStackLevel", _I, _R, _REQUIRED,
           "Maximum stackLevel of a charging profile.", minimum=0),
    _smart("ChargingScheduleAllowedChargingRateUnit", _C, _R, _REQUIRED,
           "Quantities a charging schedule may use.", allowed=frozenset({"Current", "Power"})),
    _smart("ChargingScheduleMaxPeriods", _I, _R, _REQUIRED,
           "Maximum number of periods per charging schedule.", minimum=0),
    _smart("ConnectorSwitch3to1PhaseSupported", _B, _R, _OPTIONAL,
           "Switching from 3 to 1 phase during a transaction is supported."),
    _smart("MaxChargingProfilesInstalled", _I, _R, _REQUIRED,
           "Maximum number of charging profiles installed at a time.", minimum=0),
    # Firmware Management (errata v4.0)
    _firmware("SupportedFileTransferProtocols", _C, _R, _OPTIONAL,
              "File transfer protocols supported for upload and download.",
              allowed=frozenset({"FTP", "FTPS", "HTTP", "HTTPS", "SFTP"})),
    # Security Whitepaper
    _security("AdditionalRootCertificateCheck", _B, _R, _OPTIONAL,
              "Only one Central System root certificate (plus a fallback) may be installed."),
    _security("AuthorizationKey", _S, _W, _OPTIONAL,
              "HTTP Basic Authentication password, 16-20 bytes as 32-40 hexadecimal digits. "
              "Write-only.", check=_authorization_key),
    _security("CertificateSignedMaxChainSize", _I, _R, _OPTIONAL,
              "Largest certificateChain of CertificateSigned.req (at most 10000 characters).",
              minimum=0, maximum=10000),
    _security("CertificateStoreMaxLength", _I, _R, _OPTIONAL,
              "Maximum number of Root/CA certificates installed.", minimum=0),
    _security("CpoName", _S, _RW, _OPTIONAL,
              "CPO name as used in the charge point certificate (and its CSR)."),
    _security("SecurityProfile", _I, _RW, _OPTIONAL,
              "Security profile in use; can only be raised, never lowered.",
              minimum=0, maximum=3),
)
# fmt: on

CATALOGUE: Mapping[str, KeyDefinition] = {key.name: key for key in _KEYS}
_SECRET_NAMES = frozenset(key.name.lower() for key in _KEYS if key.secret)


def definition(key: str) -> KeyDefinition | None:
    """The catalogue entry of ``key`` (exact spelling), or None for a vendor key."""
    return CATALOGUE.get(key)


def is_secret(key: str) -> bool:
    """Whether ``key`` is write-only (compared case-insensitively, to be safe)."""
    return key.lower() in _SECRET_NAMES


def mentions_secret(text: str) -> bool:
    """Whether ``text`` (a raw frame, a log line) names a write-only key, and so may
    carry its value."""
    lowered = text.lower()
    return any(name in lowered for name in _SECRET_NAMES)


# ----------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ReportedKey:
    """One key as the charge point reported it in GetConfiguration.conf.

    ``unknown``: the charge point listed it in ``unknownKey``. The value of a
    write-only key is never kept (None)."""

    key: str
    value: str | None
    readonly: bool | None
    reported_at: datetime
    unknown: bool = False


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """A ChangeConfiguration that was sent and what came of it.

    ``value`` is None for a write-only key (only that it was set, and when, is
    kept). ``status`` is the charge point's answer; None with ``error`` when there
    was no answer (timeout, CALLERROR)."""

    charge_point_id: str
    key: str
    value: str | None
    secret: bool
    origin: str
    requested_at: datetime
    status: str | None = None
    error: str | None = None
    answered_at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class SyncState:
    charge_point_id: str
    synced_at: datetime | None = None
    error: str | None = None
    error_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConfigurationTemplate:
    """Desired values shared by a group of charge points."""

    name: str
    description: str | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    members: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None


# -------------------------------------------------------------- validation


class ConfigurationError(Exception):
    """A configuration change or desired value that is refused before anything is sent."""

    def __init__(self, key: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.details = {"key": key, **(details or {})}


class ReadOnlyKey(ConfigurationError):
    """The key cannot be changed (catalogue R, or the charge point reports it read-only)."""


class InvalidValue(ConfigurationError):
    """The value does not fit the key's type, range or allowed values."""


class NotDesirable(ConfigurationError):
    """A write-only key cannot be a desired value: it would have to be stored in clear."""


def _invalid(key: KeyDefinition, value: str, reason: str) -> InvalidValue:
    # A write-only value is never repeated in an error (errors end up in logs).
    shown = REDACTED if key.secret else value
    details: dict[str, Any] = {"value": shown, "type": key.type.value, "reason": reason}
    if key.minimum is not None:
        details["minimum"] = key.minimum
    if key.maximum is not None:
        details["maximum"] = key.maximum
    if key.allowed is not None:
        details["allowed"] = sorted(key.allowed)
    return InvalidValue(
        key.name, f"invalid value for {key.name} ({key.type.value}): {reason}", details
    )


def _items(value: str) -> list[str]:
    """The items of a CSL (§9: comma separated list), spaces around them dropped."""
    if not value.strip():
        return []
    return [item.strip() for item in value.split(",")]


def _reported_int(reported: Mapping[str, ReportedKey], key: str) -> int | None:
    entry = reported.get(key)
    if entry is None or entry.value is None:
        return None
    text = entry.value.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


def check_value(key: str, value: str, *, reported: Mapping[str, ReportedKey] | None = None) -> str:
    """Check a ChangeConfiguration before it is sent; return the value to send.

    Raises :class:`ReadOnlyKey` or :class:`InvalidValue`. Booleans and integers are
    sent in their canonical form (``true``/``false``, no sign or leading zeros), a
    CSL without spaces around its items. ``reported`` (the charge point's last
    report) adds its own facts: a key it reports read-only, the maximum number of
    items of a CSL, and that SecurityProfile may only be raised.
    """
    reported = reported or {}
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidValue(
            key, f"a configuration key has 1 to {MAX_KEY_LENGTH} characters (CiString50Type)"
        )
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidValue(
            key,
            f"a configuration value has at most {MAX_VALUE_LENGTH} characters (CiString500Type)",
            {"reason": "too long"},
        )
    entry = reported.get(key)
    known = CATALOGUE.get(key)
    if known is not None and not known.writable:
        raise ReadOnlyKey(
            key,
            f"{key} is read-only ({known.reference}): the charge point sets it",
            {"access": known.access.value, "reference": known.reference},
        )
    if entry is not None and entry.readonly:
        raise ReadOnlyKey(
            key,
            f"the charge point reports {key} as read-only",
            {"access": "R", "reported_at": entry.reported_at.isoformat()},
        )
    if known is None:
        return value  # vendor-specific: a string
    return _normalize(known, value, reported)


def _normalize(key: KeyDefinition, value: str, reported: Mapping[str, ReportedKey]) -> str:
    if key.type is ValueType.BOOLEAN:
        text = value.strip().lower()
        if text not in ("true", "false"):
            raise _invalid(key, value, "expected true or false")
        return text
    if key.type is ValueType.INTEGER:
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise _invalid(key, value, "expected a whole number")
        number = int(text)
        if key.minimum is not None and number < key.minimum:
            raise _invalid(key, value, f"must be at least {key.minimum}")
        if key.maximum is not None and number > key.maximum:
            raise _invalid(key, value, f"must be at most {key.maximum}")
        if key.name == "SecurityProfile":
            current = _reported_int(reported, key.name)
            if current is not None and number < current:
                raise _invalid(
                    key,
                    value,
                    f"the security profile can only be raised, and the charge point is at "
                    f"{current} ({key.reference})",
                )
        return str(number)
    if key.type is ValueType.CSL:
        items = _items(value)
        for item in items:
            if not item:
                raise _invalid(key, value, "an item of the comma separated list is empty")
            if key.allowed is not None and item not in key.allowed:
                raise _invalid(key, value, f"{item!r} is not allowed")
            if key.check is not None:
                problem = key.check(item)
                if problem is not None:
                    raise _invalid(key, value, problem)
        if key.max_items_key is not None:
            limit = _reported_int(reported, key.max_items_key)
            if limit is not None and len(items) > limit:
                raise _invalid(
                    key,
                    value,
                    f"{len(items)} items; the charge point takes at most {limit} "
                    f"({key.max_items_key})",
                )
        return ",".join(items)
    if key.allowed is not None and value not in key.allowed:
        raise _invalid(key, value, "not an allowed value")
    if key.check is not None:
        problem = key.check(value)
        if problem is not None:
            raise _invalid(key, value, problem)
    return value


def check_desired(key: str, value: str) -> str:
    """Check a desired value (per charge point or template); return it normalized.

    A desired value is what the operator wants the charge point to have, so it
    must be writable: catalogue read-only keys raise :class:`ReadOnlyKey`, and
    write-only keys :class:`NotDesirable` (they would have to be stored in clear
    to be applied later). Range and type as for :func:`check_value`.
    """
    if is_secret(key):
        raise NotDesirable(
            key,
            f"{key} is write-only: it cannot be a desired value, because Kilowatt never "
            "stores it in clear. Set it directly with PUT .../configuration/{key}.",
        )
    return check_value(key, value)


def same_value(key: str, a: str | None, b: str | None) -> bool:
    """Whether two values of ``key`` mean the same (booleans ignore letter case,
    integers leading zeros, lists the order and spaces of their items)."""
    if a is None or b is None:
        return a is b
    known = CATALOGUE.get(key)
    if known is None or known.type is ValueType.STRING:
        return a == b
    if known.type is ValueType.BOOLEAN:
        return a.strip().lower() == b.strip().lower()
    if known.type is ValueType.INTEGER:
        x, y = a.strip(), b.strip()
        if _INTEGER.fullmatch(x) and _INTEGER.fullmatch(y):
            return int(x) == int(y)
        return x == y
    return sorted(_items(a)) == sorted(_items(b))


# ------------------------------------------------------------------- drift


@dataclass(frozen=True, slots=True)
class DesiredValue:
    key: str
    value: str
    # "charge-point" (set for this charge point) or "template" (from ``template``).
    source: str
    template: str | None = None


class DriftStatus(StrEnum):
    DIFFERS = "differs"  # reported, with another value
    NOT_REPORTED = "not_reported"  # not in the last report (or never synchronized)
    UNKNOWN_KEY = "unknown_key"  # the charge point answered unknownKey for it
    READ_ONLY = "read_only"  # the charge point reports it read-only: cannot be applied
    REBOOT_PENDING = "reboot_pending"  # set, answered RebootRequired, not rebooted since


@dataclass(frozen=True, slots=True)
class DriftEntry:
    key: str
    desired: str
    reported: str | None
    status: DriftStatus
    source: str
    template: str | None = None

    @property
    def applicable(self) -> bool:
        """Whether applying the difference sends a ChangeConfiguration for it."""
        return self.status in (DriftStatus.DIFFERS, DriftStatus.NOT_REPORTED)


def effective_desired(
    template: str | None, template_values: Mapping[str, str], own: Mapping[str, str]
) -> dict[str, DesiredValue]:
    """The desired configuration of one charge point: its template's values, with
    its own values on top (per charge point wins)."""
    desired = {
        key: DesiredValue(key, value, "template", template)
        for key, value in template_values.items()
    }
    desired.update((key, DesiredValue(key, value, "charge-point")) for key, value in own.items())
    return dict(sorted(desired.items()))


def compute_drift(
    desired: Mapping[str, DesiredValue],
    reported: Mapping[str, ReportedKey],
    pending_reboot: Mapping[str, str | None],
) -> list[DriftEntry]:
    """Where the charge point differs from its desired configuration.

    ``pending_reboot``: key → value of changes answered RebootRequired since the
    last boot (the value is in place but not in effect yet)."""
    drift: list[DriftEntry] = []
    for key, want in desired.items():
        entry = reported.get(key)
        if entry is not None and not entry.unknown and same_value(key, entry.value, want.value):
            continue
        if key in pending_reboot and same_value(key, pending_reboot[key], want.value):
            status = DriftStatus.REBOOT_PENDING
        elif entry is None:
            status = DriftStatus.NOT_REPORTED
        elif entry.unknown:
            status = DriftStatus.UNKNOWN_KEY
        elif entry.readonly:
            status = DriftStatus.READ_ONLY
        else:
            status = DriftStatus.DIFFERS
        drift.append(
            DriftEntry(
                key,
                want.value,
                None if entry is None else entry.value,
                status,
                want.source,
                want.template,
            )
        )
    return drift


# ------------------------------------------------------------ capabilities


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    return True if text == "true" else False if text == "false" else None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


def _set(value: str | None) -> frozenset[str] | None:
    return None if value is None else frozenset(item for item in _items(value) if item)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a charge point reported about itself that other features act on.

    None means "not reported" (not synchronized yet, or the key is absent)."""

    supported_feature_profiles: frozenset[str] | None = None
    heartbeat_interval: int | None = None
    meter_value_sample_interval: int | None = None
    clock_aligned_data_interval: int | None = None
    number_of_connectors: int | None = None
    get_configuration_max_keys: int | None = None
    local_auth_list_enabled: bool | None = None
    local_auth_list_max_length: int | None = None
    send_local_list_max_length: int | None = None
    reserve_connector_zero_supported: bool | None = None
    charge_profile_max_stack_level: int | None = None
    charging_schedule_allowed_charging_rate_unit: frozenset[str] | None = None
    charging_schedule_max_periods: int | None = None
    max_charging_profiles_installed: int | None = None
    connector_switch_3to1_phase_supported: bool | None = None
    supported_file_transfer_protocols: frozenset[str] | None = None
    security_profile: int | None = None

    def supports(self, profile: str) -> bool | None:
        """Whether the charge point reports ``profile`` in SupportedFeatureProfiles
        (None: not known)."""
        if self.supported_feature_profiles is None:
            return None
        return profile in self.supported_feature_profiles

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = sorted(value) if isinstance(value, frozenset) else value
        return out


def capabilities(reported: Iterable[ReportedKey]) -> Capabilities:
    values = {entry.key: entry.value for entry in reported if not entry.unknown}
    get = values.get
    return Capabilities(
        supported_feature_profiles=_set(get("SupportedFeatureProfiles")),
        heartbeat_interval=_int(get("HeartbeatInterval")),
        meter_value_sample_interval=_int(get("MeterValueSampleInterval")),
        clock_aligned_data_interval=_int(get("ClockAlignedDataInterval")),
        number_of_connectors=_int(get("NumberOfConnectors")),
        get_configuration_max_keys=_int(get("GetConfigurationMaxKeys")),
        local_auth_list_enabled=_bool(get("LocalAuthListEnabled")),
        local_auth_list_max_length=_int(get("LocalAuthListMaxLength")),
        send_local_list_max_length=_int(get("SendLocalListMaxLength")),
        reserve_connector_zero_supported=_bool(get("ReserveConnectorZeroSupported")),
        charge_profile_max_stack_level=_int(get("ChargeProfileMaxStackLevel")),
        charging_schedule_allowed_charging_rate_unit=_set(
            get("ChargingScheduleAllowedChargingRateUnit")
        ),
        charging_schedule_max_periods=_int(get("ChargingScheduleMaxPeriods")),
        max_charging_profiles_installed=_int(get("MaxChargingProfilesInstalled")),
        connector_switch_3to1_phase_supported=_bool(get("ConnectorSwitch3to1PhaseSupported")),
        supported_file_transfer_protocols=_set(get("SupportedFileTransferProtocols")),
        security_profile=_int(get("SecurityProfile")),
    )


# --------------------------------------------------------------- redaction


def redact(action: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """``payload`` with the values of write-only keys (AuthorizationKey) replaced.

    For anything that records or logs OCPP payloads (the message log): a
    ChangeConfiguration request's ``value``, and the ``configurationKey`` values of
    a GetConfiguration answer (a charge point that does report its write-only keys
    must not get them stored through us). Anything else, and a payload with nothing
    to hide, is returned as it is (not copied).
    """
    if action == "ChangeConfiguration":
        key = payload.get("key")
        if isinstance(key, str) and is_secret(key) and "value" in payload:
            return {**payload, "value": REDACTED}
        return payload
    if action == "GetConfiguration":
        keys = payload.get("configurationKey")
        if not isinstance(keys, list) or not any(
            isinstance(item, dict)
            and isinstance(item.get("key"), str)
            and is_secret(item["key"])
            and "value" in item
            for item in keys
        ):
            return payload
        return {
            **payload,
            "configurationKey": [
                {**item, "value": REDACTED}
                if isinstance(item, dict)
                and isinstance(item.get("key"), str)
                and is_secret(item["key"])
                and "value" in item
                else item
                for item in keys
            ],
        }
    return payload


SECRET_FRAME = "<frame with a write-only configuration value, not kept>"


def redact_frame(action: str | None, text: str) -> str:
    """An OCPP-J frame (raw text) with the values of write-only keys replaced.

    For anything that keeps raw frames (the message log). ``action`` is needed for a
    CALLRESULT: the action of the CALL it answers (a CALL names its own). Only a frame
    that names a write-only key is parsed. One that cannot be parsed (cut by a size
    limit, broken) or a CALLERROR (its text might echo the value) is replaced whole.
    """
    if not mentions_secret(text):
        return text
    try:
        frame = json.loads(text)
    except ValueError:
        return SECRET_FRAME
    if not isinstance(frame, list) or len(frame) < 3:
        return SECRET_FRAME
    if frame[0] == 2 and len(frame) == 4 and isinstance(frame[2], str):
        action, index = frame[2], 3
    elif frame[0] == 3 and len(frame) == 3:
        index = 2
    else:
        return SECRET_FRAME
    payload = frame[index]
    if action is None or not isinstance(payload, dict):
        return SECRET_FRAME
    redacted = redact(action, payload)
    if redacted is payload:
        return text  # it names the key but carries no value of it (GetConfiguration.req)
    frame[index] = redacted
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
