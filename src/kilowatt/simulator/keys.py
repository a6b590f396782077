"""The configuration keys of a simulated charge point (OCPP 1.6 §9), for
GetConfiguration and ChangeConfiguration.

Each key has a kind (integer, boolean, comma-separated list, string), is read-only or
not, and may restrict its values; ChangeConfiguration answers ``NotSupported`` for an
unknown key, ``Rejected`` for a read-only key or a value of the wrong kind, and
``Accepted`` otherwise. The simulated charge point reads the keys it acts on each
time it needs them, so that a change takes effect at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from kilowatt.simulator.scenario import Scenario

__all__ = ["MEASURANDS", "ConfigurationKeys", "Key"]

# What the simulated meter can measure (MeterValuesSampledData, StopTxnSampledData).
MEASURANDS = frozenset(
    {
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Power.Offered",
        "Current.Import",
        "Current.Offered",
        "Voltage",
        "SoC",
    }
)
PROFILES = "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"
MAX_KEYS = 60

Kind = Literal["int", "bool", "list", "str"]


@dataclass(slots=True)
class Key:
    value: str
    kind: Kind = "str"
    readonly: bool = False
    minimum: int | None = None
    allowed: frozenset[str] | None = None  # for the items of a list

    def accepts(self, value: str) -> bool:
        if self.kind == "int":
            try:
                number = int(value)
            except ValueError:
                return False
            return self.minimum is None or number >= self.minimum
        if self.kind == "bool":
            return value.lower() in ("true", "false")
        if self.kind == "list" and self.allowed is not None:
            items = [item.strip() for item in value.split(",") if item.strip()]
            return all(item in self.allowed for item in items)
        return len(value) <= 500


def _bool(value: bool) -> str:
    return "true" if value else "false"


def default_keys(scenario: Scenario, connectors: int) -> dict[str, Key]:
    measured = "Energy.Active.Import.Register,Power.Active.Import,SoC"
    return {
        # Core
        "AllowOfflineTxForUnknownId": Key("false", "bool"),
        "AuthorizationCacheEnabled": Key("true", "bool"),
        "AuthorizeRemoteTxRequests": Key("false", "bool"),
        "ClockAlignedDataInterval": Key("0", "int", minimum=0),
        "ConnectionTimeOut": Key(str(scenario.remote_start_wait), "int", minimum=1),
        "ConnectorPhaseRotation": Key(
            ",".join(["0.RST", *(f"{i}.RST" for i in range(1, connectors + 1))]), "list"
        ),
        "GetConfigurationMaxKeys": Key(str(MAX_KEYS), "int", readonly=True),
        "HeartbeatInterval": Key("300", "int", minimum=1),
        "LocalAuthorizeOffline": Key("true", "bool"),
        "LocalPreAuthorize": Key("true", "bool"),
        "MeterValuesAlignedData": Key("Energy.Active.Import.Register", "list", allowed=MEASURANDS),
        "MeterValuesSampledData": Key(measured, "list", allowed=MEASURANDS),
        "MeterValueSampleInterval": Key(str(scenario.meter_interval), "int", minimum=0),
        "NumberOfConnectors": Key(str(connectors), "int", readonly=True),
        "ResetRetries": Key("3", "int", minimum=0),
        "StopTransactionOnEVSideDisconnect": Key("true", "bool"),
        "StopTransactionOnInvalidId": Key(_bool(scenario.stop_on_invalid_id), "bool"),
        "StopTxnAlignedData": Key("", "list", allowed=MEASURANDS),
        "StopTxnSampledData": Key("Energy.Active.Import.Register", "list", allowed=MEASURANDS),
        "SupportedFeatureProfiles": Key(PROFILES, "list", readonly=True),
        "TransactionMessageAttempts": Key("3", "int", minimum=0),
        "TransactionMessageRetryInterval": Key("60", "int", minimum=0),
        "UnlockConnectorOnEVSideDisconnect": Key("true", "bool"),
        "WebSocketPingInterval": Key("0", "int", minimum=0),
        # Local Auth List Management
        "LocalAuthListEnabled": Key("true", "bool"),
        "LocalAuthListMaxLength": Key("1000", "int", readonly=True),
        "SendLocalListMaxLength": Key("100", "int", readonly=True),
        # Reservation
        "ReserveConnectorZeroSupported": Key("false", "bool", readonly=True),
        # Smart Charging
        "ChargeProfileMaxStackLevel": Key("10", "int", readonly=True),
        "ChargingScheduleAllowedChargingRateUnit": Key("Current,Power", "list", readonly=True),
        "ChargingScheduleMaxPeriods": Key("24", "int", readonly=True),
        "MaxChargingProfilesInstalled": Key("20", "int", readonly=True),
        # Security Whitepaper
        "SecurityProfile": Key("0", "int", minimum=0),
        "CpoName": Key("Kilowatt"),
        "CertificateStoreMaxLength": Key("10", "int", readonly=True),
        "AdditionalRootCertificateCheck": Key("false", "bool", readonly=True),
    }


class ConfigurationKeys:
    """The key table of one charge point; ``on_change(key)`` runs after an accepted change."""

    def __init__(
        self,
        scenario: Scenario,
        connectors: int,
        *,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._keys = default_keys(scenario, connectors)
        self._on_change = on_change

    # ------------------------------------------------------------- reading

    def integer(self, key: str) -> int:
        return int(self._keys[key].value)

    def boolean(self, key: str) -> bool:
        return self._keys[key].value.lower() == "true"

    def items(self, key: str) -> list[str]:
        return [item.strip() for item in self._keys[key].value.split(",") if item.strip()]

    def set(self, key: str, value: str) -> None:
        """Set a key from the charge point's own side (no checks, no callback)."""
        self._keys[key].value = value

    # -------------------------------------------------------------- OCPP

    def get_configuration(self, keys: Iterable[str] | None) -> dict[str, Any]:
        """The GetConfiguration.conf payload for ``keys`` (None or empty: all keys)."""
        wanted = list(keys or ())
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        for name in wanted or self._keys:
            key = self._keys.get(name)
            if key is None:
                unknown.append(name)
            else:
                known.append({"key": name, "readonly": key.readonly, "value": key.value})
        answer: dict[str, Any] = {}
        if known:
            answer["configurationKey"] = known
        if unknown:
            answer["unknownKey"] = unknown
        return answer

    def change_configuration(self, name: str, value: str) -> str:
        """The ChangeConfiguration.conf status."""
        key = self._keys.get(name)
        if key is None:
            return "NotSupported"
        if key.readonly or not key.accepts(value):
            return "Rejected"
        key.value = value.lower() if key.kind == "bool" else value
        if self._on_change is not None:
            self._on_change(name)
        return "Accepted"
