"""Notifications of the Firmware and Security profiles, acknowledged.

OCPP 1.6 §6 gives these requests empty confirmations; what the server does with
them (firmware and diagnostics state, security event log) lands with those
features. SignCertificate is refused until certificate management exists.
"""

from __future__ import annotations

from typing import Any

from kilowatt.protocol.router import CallContext, Handler

__all__ = ["notification_routes"]


async def _acknowledge(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {}


async def _sign_certificate(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
    # Security Whitepaper §3.3: Rejected until a certificate authority is configured.
    return {"status": "Rejected"}


def notification_routes() -> dict[str, Handler]:
    return {
        "DiagnosticsStatusNotification": _acknowledge,
        "FirmwareStatusNotification": _acknowledge,
        "LogStatusNotification": _acknowledge,
        "SecurityEventNotification": _acknowledge,
        "SignedFirmwareStatusNotification": _acknowledge,
        "SignCertificate": _sign_certificate,
    }
