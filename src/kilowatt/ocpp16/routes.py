"""The whole OCPP 1.6 surface on one page: every action, its direction and profile.

``CHARGE_POINT_TO_CENTRAL`` are the CALLs a charge point sends us (we answer them);
``CENTRAL_TO_CHARGE_POINT`` are the CALLs we send (the charge point answers them).
DataTransfer goes both ways. The profile names are those of OCPP 1.6 §3.2 plus the
Security Whitepaper ("Security") and ISO 15118 Plug & Charge over DataTransfer.
"""

from __future__ import annotations

from typing import Final

from kilowatt.ocpp16.schemas import schema_validator
from kilowatt.protocol.session import ProtocolSpec

__all__ = [
    "CENTRAL_TO_CHARGE_POINT",
    "CHARGE_POINT_TO_CENTRAL",
    "SUBPROTOCOL",
    "protocol_spec",
]

SUBPROTOCOL: Final = "ocpp1.6"

CORE: Final = "Core"
FIRMWARE: Final = "FirmwareManagement"
LOCAL_AUTH_LIST: Final = "LocalAuthListManagement"
RESERVATION: Final = "Reservation"
SMART_CHARGING: Final = "SmartCharging"
REMOTE_TRIGGER: Final = "RemoteTrigger"
SECURITY: Final = "Security"

CHARGE_POINT_TO_CENTRAL: Final[dict[str, str]] = {
    "Authorize": CORE,
    "BootNotification": CORE,
    "DataTransfer": CORE,
    "Heartbeat": CORE,
    "MeterValues": CORE,
    "StartTransaction": CORE,
    "StatusNotification": CORE,
    "StopTransaction": CORE,
    "DiagnosticsStatusNotification": FIRMWARE,
    "FirmwareStatusNotification": FIRMWARE,
    "LogStatusNotification": SECURITY,
    "SecurityEventNotification": SECURITY,
    "SignCertificate": SECURITY,
    "SignedFirmwareStatusNotification": SECURITY,
}

CENTRAL_TO_CHARGE_POINT: Final[dict[str, str]] = {
    "ChangeAvailability": CORE,
    "ChangeConfiguration": CORE,
    "ClearCache": CORE,
    "DataTransfer": CORE,
    "GetConfiguration": CORE,
    "RemoteStartTransaction": CORE,
    "RemoteStopTransaction": CORE,
    "Reset": CORE,
    "UnlockConnector": CORE,
    "GetDiagnostics": FIRMWARE,
    "UpdateFirmware": FIRMWARE,
    "GetLocalListVersion": LOCAL_AUTH_LIST,
    "SendLocalList": LOCAL_AUTH_LIST,
    "CancelReservation": RESERVATION,
    "ReserveNow": RESERVATION,
    "ClearChargingProfile": SMART_CHARGING,
    "GetCompositeSchedule": SMART_CHARGING,
    "SetChargingProfile": SMART_CHARGING,
    "TriggerMessage": REMOTE_TRIGGER,
    "CertificateSigned": SECURITY,
    "DeleteCertificate": SECURITY,
    "ExtendedTriggerMessage": SECURITY,
    "GetInstalledCertificateIds": SECURITY,
    "GetLog": SECURITY,
    "InstallCertificate": SECURITY,
    "SignedUpdateFirmware": SECURITY,
}


def protocol_spec() -> ProtocolSpec:
    """OCPP 1.6 for the Central System side, with every schema compiled once."""
    validator = schema_validator()
    validator.compile_all()
    return ProtocolSpec(
        validator,
        incoming=frozenset(CHARGE_POINT_TO_CENTRAL),
        outgoing=frozenset(CENTRAL_TO_CHARGE_POINT),
    )
