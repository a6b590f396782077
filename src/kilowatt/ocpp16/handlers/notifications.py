"""Notifications of the Firmware and Security profiles, acknowledged.

OCPP 1.6 §6 gives these requests empty confirmations; what the server does with
them (firmware and diagnostics state, a stored security event log) lands with those
features. SecurityEventNotification is published as a ``security_event`` event
already. SignCertificate is refused until certificate management exists.
"""

from __future__ import annotations

from typing import Any

from kilowatt.protocol.router import CallContext, Handler
from kilowatt.services.events import SecurityEventService

__all__ = ["notification_routes"]


async def _acknowledge(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {}


async def _sign_certificate(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
    # Security Whitepaper §3.3: Rejected until a certificate authority is configured.
    return {"status": "Rejected"}


def notification_routes(
    *, security_events: SecurityEventService | None = None
) -> dict[str, Handler]:
    async def security_event(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        if security_events is not None:
            await security_events.notify(
                ctx.charge_point_id,
                event_type=payload["type"],
                timestamp=payload["timestamp"],
                tech_info=payload.get("techInfo"),
            )
        return {}

    return {
        "DiagnosticsStatusNotification": _acknowledge,
        "FirmwareStatusNotification": _acknowledge,
        "LogStatusNotification": _acknowledge,
        "SecurityEventNotification": security_event,
        "SignedFirmwareStatusNotification": _acknowledge,
        "SignCertificate": _sign_certificate,
    }
