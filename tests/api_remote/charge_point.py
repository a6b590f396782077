"""A charge point built on the ``ocpp`` package that answers every CS→CP action.

Each handler records the keyword arguments ``ocpp`` derived from the CALL (snake_case)
and answers the result listed in :data:`ANSWERS` (camelCase, as on the wire). The
connection object handed to ``ocpp`` is a :class:`Wire`, which keeps every raw frame,
so tests can assert on the exact CALL the Central System put on the socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    CancelReservationStatus,
    CertificateSignedStatus,
    CertificateStatus,
    ChargingProfileStatus,
    ChargingRateUnitType,
    ClearCacheStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    DataTransferStatus,
    DeleteCertificateStatus,
    GetCompositeScheduleStatus,
    GetInstalledCertificateStatus,
    HashAlgorithm,
    LogStatus,
    RemoteStartStopStatus,
    ReservationStatus,
    ResetStatus,
    TriggerMessageStatus,
    UnlockStatus,
    UpdateFirmwareStatus,
    UpdateStatus,
)
from websockets.asyncio.client import ClientConnection

__all__ = ["ANSWERS", "ChargePoint", "Override", "Wire"]

CALL, CALLRESULT, CALLERROR = 2, 3, 4

ISSUER_NAME_HASH = "5f6c1e0d8a1b4c2e9f3a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e"
ISSUER_KEY_HASH = "0e1d2c3b4a5968778695a4b3c2d1e0f0e1d2c3b4a5968778695a4b3c2d1e0f1a"

# What the charge point answers, exactly as it must appear on the wire (camelCase).
ANSWERS: dict[str, dict[str, Any]] = {
    "CancelReservation": {"status": "Accepted"},
    "CertificateSigned": {"status": "Accepted"},
    "ChangeAvailability": {"status": "Scheduled"},
    "ChangeConfiguration": {"status": "RebootRequired"},
    "ClearCache": {"status": "Accepted"},
    "ClearChargingProfile": {"status": "Unknown"},
    "DataTransfer": {"status": "Accepted", "data": '{"tariffApplied":true}'},
    "DeleteCertificate": {"status": "NotFound"},
    "ExtendedTriggerMessage": {"status": "Accepted"},
    "GetCompositeSchedule": {
        "status": "Accepted",
        "connectorId": 1,
        "scheduleStart": "2026-03-01T10:00:00Z",
        "chargingSchedule": {
            "duration": 3600,
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 11000.0, "numberPhases": 3},
                {"startPeriod": 1800, "limit": 7400.5},
            ],
        },
    },
    "GetConfiguration": {
        "configurationKey": [
            {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
            {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
        ],
        "unknownKey": ["VendorSecretKey"],
    },
    "GetDiagnostics": {"fileName": "diagnostics-2026-03-01.tar.gz"},
    "GetInstalledCertificateIds": {
        "status": "Accepted",
        "certificateHashData": [
            {
                "hashAlgorithm": "SHA256",
                "issuerNameHash": ISSUER_NAME_HASH,
                "issuerKeyHash": ISSUER_KEY_HASH,
                "serialNumber": "3c5a9f01",
            }
        ],
    },
    "GetLocalListVersion": {"listVersion": 4},
    "GetLog": {"status": "Accepted", "filename": "security-2026-03.log"},
    "InstallCertificate": {"status": "Accepted"},
    "RemoteStartTransaction": {"status": "Accepted"},
    "RemoteStopTransaction": {"status": "Rejected"},
    "ReserveNow": {"status": "Occupied"},
    "Reset": {"status": "Accepted"},
    "SendLocalList": {"status": "VersionMismatch"},
    "SetChargingProfile": {"status": "Accepted"},
    "SignedUpdateFirmware": {"status": "Accepted"},
    "TriggerMessage": {"status": "Accepted"},
    "UnlockConnector": {"status": "Unlocked"},
    "UpdateFirmware": {},
}

Override = Callable[[dict[str, Any]], Awaitable[Any]]
"""``override(kwargs) -> result``: answers in place of the handler (may raise or hang)."""


class Wire:
    """The connection object given to ``ocpp``'s ChargePoint; keeps every raw frame.

    ``frames`` holds ``("in" | "out", raw text)`` in the order the client saw them;
    an outgoing frame is recorded just before it is written.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[str, str]] = []

    async def recv(self) -> str | bytes:
        message = await self.ws.recv()
        self.frames.append(("in", message if isinstance(message, str) else message.decode()))
        return message

    async def send(self, message: str) -> None:
        self.frames.append(("out", message))
        await self.ws.send(message)

    def decoded(self, direction: str, message_type: int) -> list[list[Any]]:
        frames = [json.loads(raw) for way, raw in self.frames if way == direction]
        return [frame for frame in frames if frame[0] == message_type]

    def calls_received(self) -> list[list[Any]]:
        """The CALL frames the Central System sent, decoded, in arrival order."""
        return self.decoded("in", CALL)

    def raw_calls_received(self) -> list[str]:
        return [raw for way, raw in self.frames if way == "in" and json.loads(raw)[0] == CALL]

    def answers_sent(self) -> list[list[Any]]:
        """The CALLRESULT and CALLERROR frames this charge point wrote, decoded."""
        frames = [json.loads(raw) for way, raw in self.frames if way == "out"]
        return [frame for frame in frames if frame[0] in (CALLRESULT, CALLERROR)]


class ChargePoint(OcppChargePoint):  # type: ignore[misc]
    """``ocpp.v16.ChargePoint`` with a handler for each of the 26 CS→CP actions.

    ``received[action]`` lists the keyword arguments of every call of that action;
    ``overrides[action]`` replaces the answer (to raise an OCPP error, or to hang).
    Each received message is routed in its own task: the stock ``start()`` awaits
    handlers inside its read loop, so one hanging handler would stop all reading.
    """

    def __init__(self, charge_point_id: str, wire: Wire) -> None:
        super().__init__(charge_point_id, wire, response_timeout=5)
        self.wire = wire
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.overrides: dict[str, Override] = {}

    async def start(self) -> None:
        routing: set[asyncio.Task[Any]] = set()
        try:
            while True:
                message = await self._connection.recv()
                task = asyncio.create_task(self.route_message(message))
                routing.add(task)
                task.add_done_callback(routing.discard)
        finally:
            for task in routing:
                task.cancel()
            if routing:
                await asyncio.wait(routing)

    async def _answer(self, action: str, kwargs: dict[str, Any], result: Any) -> Any:
        self.received.setdefault(action, []).append(kwargs)
        override = self.overrides.get(action)
        if override is not None:
            return await override(kwargs)
        return result

    # ------------------------------------------------------------------ Core

    @on(Action.change_availability)
    async def on_change_availability(self, **kwargs: Any) -> Any:
        result = call_result.ChangeAvailability(status=AvailabilityStatus.scheduled)
        return await self._answer("ChangeAvailability", kwargs, result)

    @on(Action.change_configuration)
    async def on_change_configuration(self, **kwargs: Any) -> Any:
        result = call_result.ChangeConfiguration(status=ConfigurationStatus.reboot_required)
        return await self._answer("ChangeConfiguration", kwargs, result)

    @on(Action.clear_cache)
    async def on_clear_cache(self, **kwargs: Any) -> Any:
        result = call_result.ClearCache(status=ClearCacheStatus.accepted)
        return await self._answer("ClearCache", kwargs, result)

    @on(Action.data_transfer)
    async def on_data_transfer(self, **kwargs: Any) -> Any:
        result = call_result.DataTransfer(
            status=DataTransferStatus.accepted, data='{"tariffApplied":true}'
        )
        return await self._answer("DataTransfer", kwargs, result)

    @on(Action.get_configuration)
    async def on_get_configuration(self, **kwargs: Any) -> Any:
        result = call_result.GetConfiguration(
            configuration_key=[
                {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
                {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
            ],
            unknown_key=["VendorSecretKey"],
        )
        return await self._answer("GetConfiguration", kwargs, result)

    @on(Action.remote_start_transaction)
    async def on_remote_start_transaction(self, **kwargs: Any) -> Any:
        result = call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)
        return await self._answer("RemoteStartTransaction", kwargs, result)

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(self, **kwargs: Any) -> Any:
        result = call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)
        return await self._answer("RemoteStopTransaction", kwargs, result)

    @on(Action.reset)
    async def on_reset(self, **kwargs: Any) -> Any:
        result = call_result.Reset(status=ResetStatus.accepted)
        return await self._answer("Reset", kwargs, result)

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, **kwargs: Any) -> Any:
        result = call_result.UnlockConnector(status=UnlockStatus.unlocked)
        return await self._answer("UnlockConnector", kwargs, result)

    # ---------------------------------------------------- FirmwareManagement

    @on(Action.get_diagnostics)
    async def on_get_diagnostics(self, **kwargs: Any) -> Any:
        result = call_result.GetDiagnostics(file_name="diagnostics-2026-03-01.tar.gz")
        return await self._answer("GetDiagnostics", kwargs, result)

    @on(Action.update_firmware)
    async def on_update_firmware(self, **kwargs: Any) -> Any:
        return await self._answer("UpdateFirmware", kwargs, call_result.UpdateFirmware())

    # ----------------------------------------------- LocalAuthListManagement

    @on(Action.get_local_list_version)
    async def on_get_local_list_version(self, **kwargs: Any) -> Any:
        result = call_result.GetLocalListVersion(list_version=4)
        return await self._answer("GetLocalListVersion", kwargs, result)

    @on(Action.send_local_list)
    async def on_send_local_list(self, **kwargs: Any) -> Any:
        result = call_result.SendLocalList(status=UpdateStatus.version_mismatch)
        return await self._answer("SendLocalList", kwargs, result)

    # ----------------------------------------------------------- Reservation

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, **kwargs: Any) -> Any:
        result = call_result.CancelReservation(status=CancelReservationStatus.accepted)
        return await self._answer("CancelReservation", kwargs, result)

    @on(Action.reserve_now)
    async def on_reserve_now(self, **kwargs: Any) -> Any:
        result = call_result.ReserveNow(status=ReservationStatus.occupied)
        return await self._answer("ReserveNow", kwargs, result)

    # -------------------------------------------------------- SmartCharging

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, **kwargs: Any) -> Any:
        result = call_result.ClearChargingProfile(status=ClearChargingProfileStatus.unknown)
        return await self._answer("ClearChargingProfile", kwargs, result)

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(self, **kwargs: Any) -> Any:
        result = call_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted,
            connector_id=1,
            schedule_start="2026-03-01T10:00:00Z",
            charging_schedule={
                "duration": 3600,
                "charging_rate_unit": ChargingRateUnitType.watts,
                "charging_schedule_period": [
                    {"start_period": 0, "limit": 11000.0, "number_phases": 3},
                    {"start_period": 1800, "limit": 7400.5},
                ],
            },
        )
        return await self._answer("GetCompositeSchedule", kwargs, result)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, **kwargs: Any) -> Any:
        result = call_result.SetChargingProfile(status=ChargingProfileStatus.accepted)
        return await self._answer("SetChargingProfile", kwargs, result)

    # -------------------------------------------------------- RemoteTrigger

    @on(Action.trigger_message)
    async def on_trigger_message(self, **kwargs: Any) -> Any:
        result = call_result.TriggerMessage(status=TriggerMessageStatus.accepted)
        return await self._answer("TriggerMessage", kwargs, result)

    # ---------------------------------------------- Security Whitepaper

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, **kwargs: Any) -> Any:
        result = call_result.CertificateSigned(status=CertificateSignedStatus.accepted)
        return await self._answer("CertificateSigned", kwargs, result)

    @on(Action.delete_certificate)
    async def on_delete_certificate(self, **kwargs: Any) -> Any:
        result = call_result.DeleteCertificate(status=DeleteCertificateStatus.not_found)
        return await self._answer("DeleteCertificate", kwargs, result)

    @on(Action.extended_trigger_message)
    async def on_extended_trigger_message(self, **kwargs: Any) -> Any:
        result = call_result.ExtendedTriggerMessage(status=TriggerMessageStatus.accepted)
        return await self._answer("ExtendedTriggerMessage", kwargs, result)

    @on(Action.get_installed_certificate_ids)
    async def on_get_installed_certificate_ids(self, **kwargs: Any) -> Any:
        result = call_result.GetInstalledCertificateIds(
            status=GetInstalledCertificateStatus.accepted,
            certificate_hash_data=[
                {
                    "hash_algorithm": HashAlgorithm.sha256,
                    "issuer_name_hash": ISSUER_NAME_HASH,
                    "issuer_key_hash": ISSUER_KEY_HASH,
                    "serial_number": "3c5a9f01",
                }
            ],
        )
        return await self._answer("GetInstalledCertificateIds", kwargs, result)

    @on(Action.get_log)
    async def on_get_log(self, **kwargs: Any) -> Any:
        result = call_result.GetLog(status=LogStatus.accepted, filename="security-2026-03.log")
        return await self._answer("GetLog", kwargs, result)

    @on(Action.install_certificate)
    async def on_install_certificate(self, **kwargs: Any) -> Any:
        result = call_result.InstallCertificate(status=CertificateStatus.accepted)
        return await self._answer("InstallCertificate", kwargs, result)

    @on(Action.signed_update_firmware)
    async def on_signed_update_firmware(self, **kwargs: Any) -> Any:
        result = call_result.SignedUpdateFirmware(status=UpdateFirmwareStatus.accepted)
        return await self._answer("SignedUpdateFirmware", kwargs, result)
