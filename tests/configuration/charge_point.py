"""A charge point on the ``ocpp`` package that keeps its own configuration key table.

GetConfiguration answers from the table (``unknownKey`` for what it does not have;
write-only keys are never listed), ChangeConfiguration changes it and answers
Accepted, Rejected (read-only or refused), RebootRequired or NotSupported (not in the
table). Every CALL the Central System sends is recorded, and the raw frames in the
order they crossed the socket.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, ConfigurationStatus, ResetStatus
from websockets.asyncio.client import ClientConnection

__all__ = ["Entry", "KeyTableChargePoint", "Wire", "standard_table"]


@dataclass
class Entry:
    value: str | None
    readonly: bool = False
    reboot: bool = False  # a change answers RebootRequired
    refuse: bool = False  # a change answers Rejected
    write_only: bool = False  # never listed by GetConfiguration (AuthorizationKey)
    report_anyway: bool = False  # a broken charge point that lists its write-only value
    pending: str | None = None  # set, answered RebootRequired, not in effect yet


def standard_table() -> dict[str, Entry]:
    return {
        "HeartbeatInterval": Entry("300"),
        "MeterValueSampleInterval": Entry("60"),
        "MeterValuesSampledData": Entry("Energy.Active.Import.Register"),
        "MeterValuesSampledDataMaxLength": Entry("3", readonly=True),
        "NumberOfConnectors": Entry("2", readonly=True),
        "GetConfigurationMaxKeys": Entry("20", readonly=True),
        "SupportedFeatureProfiles": Entry(
            "Core,LocalAuthListManagement,SmartCharging", readonly=True
        ),
        "SendLocalListMaxLength": Entry("50", readonly=True),
        "ChargeProfileMaxStackLevel": Entry("8", readonly=True),
        "LocalAuthListEnabled": Entry("true"),
        "ConnectionTimeOut": Entry("90", reboot=True),
        "AuthorizeRemoteTxRequests": Entry("false", readonly=True),  # R on this one
        "LightIntensity": Entry("50", refuse=True),
        "AuthorizationKey": Entry(None, write_only=True),
        "VendorMode": Entry("eco"),
        "VendorSerial": Entry("XYZ-1", readonly=True),
    }


class Wire:
    """The connection handed to ``ocpp``: keeps every raw frame in socket order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[str, list[Any]]] = []

    async def recv(self) -> str | bytes:
        message = await self.ws.recv()
        text = message if isinstance(message, str) else message.decode()
        self.frames.append(("in", json.loads(text)))
        return message

    async def send(self, message: str) -> None:
        self.frames.append(("out", json.loads(message)))
        await self.ws.send(message)

    def calls_in(self) -> list[list[Any]]:
        """The CALL frames the Central System sent, in arrival order."""
        return [frame for way, frame in self.frames if way == "in" and frame[0] == 2]


class KeyTableChargePoint(OcppChargePoint):  # type: ignore[misc]
    def __init__(self, charge_point_id: str, wire: Wire, table: dict[str, Entry]) -> None:
        super().__init__(charge_point_id, wire)
        self.wire = wire
        self.table = table
        self.received: list[tuple[str, dict[str, Any]]] = []
        # Actions this charge point never answers (its ``ocpp`` read loop waits too).
        self.stall: set[str] = set()

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [payload for name, payload in self.received if name == action]

    @on(Action.get_configuration)
    async def on_get_configuration(self, key: list[str] | None = None) -> Any:
        self.received.append(("GetConfiguration", {"key": key}))
        if "GetConfiguration" in self.stall:
            await asyncio.sleep(60)
        if key:
            names = key
        else:
            names = [
                name
                for name, entry in self.table.items()
                if not entry.write_only or entry.report_anyway
            ]
        reported: list[dict[str, Any]] = []
        unknown: list[str] = []
        for name in names:
            entry = self.table.get(name)
            if entry is None or (entry.write_only and not entry.report_anyway):
                unknown.append(name)
                continue
            item: dict[str, Any] = {"key": name, "readonly": entry.readonly}
            if entry.value is not None:
                item["value"] = entry.value
            reported.append(item)
        return call_result.GetConfiguration(
            configuration_key=reported or None, unknown_key=unknown or None
        )

    @on(Action.change_configuration)
    async def on_change_configuration(self, key: str, value: str) -> Any:
        self.received.append(("ChangeConfiguration", {"key": key, "value": value}))
        entry = self.table.get(key)
        if entry is None:
            return call_result.ChangeConfiguration(status=ConfigurationStatus.not_supported)
        if entry.readonly or entry.refuse:
            return call_result.ChangeConfiguration(status=ConfigurationStatus.rejected)
        if entry.reboot:
            entry.pending = value  # in effect (and reported) after the next reset
            return call_result.ChangeConfiguration(status=ConfigurationStatus.reboot_required)
        entry.value = value
        return call_result.ChangeConfiguration(status=ConfigurationStatus.accepted)

    @on(Action.reset)
    async def on_reset(self, type: str) -> Any:
        self.received.append(("Reset", {"type": type}))
        for entry in self.table.values():
            if entry.pending is not None:
                entry.value, entry.pending = entry.pending, None
        return call_result.Reset(status=ResetStatus.accepted)
