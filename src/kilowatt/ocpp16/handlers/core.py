"""Core profile handlers (OCPP 1.6 §4, §6): decode, call one service, encode."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kilowatt.clock import Clock, format_datetime
from kilowatt.domain.models import BootInfo, IdTagInfo
from kilowatt.domain.timestamps import parse_timestamp
from kilowatt.protocol.errors import PropertyConstraintError
from kilowatt.protocol.router import CallContext, Handler, Inline
from kilowatt.services.authorization import AuthorizationService
from kilowatt.services.charge_points import ChargePointService, StatusReport
from kilowatt.services.data_transfer import DataTransferRegistry
from kilowatt.services.transactions import StopRequest, TransactionService

__all__ = ["core_routes", "encode_id_tag_info"]


def _timestamp(payload: dict[str, Any], field: str) -> datetime:
    try:
        return parse_timestamp(payload[field])
    except ValueError:
        raise PropertyConstraintError(
            f"payload.{field} is not an ISO 8601 dateTime", {"path": f"payload.{field}"}
        ) from None


def encode_id_tag_info(info: IdTagInfo) -> dict[str, Any]:
    """OCPP 1.6 §7.11 IdTagInfo on the wire."""
    encoded: dict[str, Any] = {"status": info.status.value}
    if info.expiry_date is not None:
        encoded["expiryDate"] = format_datetime(info.expiry_date)
    if info.parent_id_tag is not None:
        encoded["parentIdTag"] = info.parent_id_tag
    return encoded


def core_routes(
    *,
    clock: Clock,
    charge_points: ChargePointService,
    authorization: AuthorizationService,
    transactions: TransactionService,
    data_transfer: DataTransferRegistry,
) -> dict[str, Handler]:
    async def boot_notification(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        decision = await charge_points.boot(
            ctx.charge_point_id,
            BootInfo(
                vendor=payload["chargePointVendor"],
                model=payload["chargePointModel"],
                serial_number=payload.get("chargePointSerialNumber"),
                charge_box_serial_number=payload.get("chargeBoxSerialNumber"),
                firmware_version=payload.get("firmwareVersion"),
                iccid=payload.get("iccid"),
                imsi=payload.get("imsi"),
                meter_type=payload.get("meterType"),
                meter_serial_number=payload.get("meterSerialNumber"),
            ),
        )
        # OCPP 1.6 §4.2: once Accepted, interval is the heartbeat interval; otherwise
        # the minimum wait before the next BootNotification.
        return {
            "status": decision.registration.value,
            "currentTime": format_datetime(clock.now()),
            "interval": decision.interval,
        }

    def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        # Nothing to wait for: answered inline, without a task (Inline).
        return {"currentTime": format_datetime(clock.now())}

    async def status_notification(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        await charge_points.status(
            ctx.charge_point_id,
            StatusReport(
                connector_id=payload["connectorId"],
                status=payload["status"],
                error_code=payload["errorCode"],
                info=payload.get("info"),
                vendor_id=payload.get("vendorId"),
                vendor_error_code=payload.get("vendorErrorCode"),
                timestamp=_timestamp(payload, "timestamp") if "timestamp" in payload else None,
            ),
        )
        return {}

    async def authorize(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        info = await authorization.authorize(payload["idTag"])
        return {"idTagInfo": encode_id_tag_info(info)}

    async def start_transaction(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        result = await transactions.start(
            ctx.charge_point_id,
            connector_id=payload["connectorId"],
            id_tag=payload["idTag"],
            meter_start=payload["meterStart"],
            timestamp=_timestamp(payload, "timestamp"),
            reservation_id=payload.get("reservationId"),
        )
        return {
            "transactionId": result.transaction_id,
            "idTagInfo": encode_id_tag_info(result.id_tag_info),
        }

    async def stop_transaction(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        info = await transactions.stop(
            ctx.charge_point_id,
            StopRequest(
                transaction_id=payload["transactionId"],
                meter_stop=payload["meterStop"],
                timestamp=_timestamp(payload, "timestamp"),
                id_tag=payload.get("idTag"),
                reason=payload.get("reason"),
                transaction_data=payload.get("transactionData", ()),
            ),
        )
        # OCPP 1.6 §6.51: idTagInfo only when the request carried an idTag.
        return {} if info is None else {"idTagInfo": encode_id_tag_info(info)}

    async def meter_values(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            await transactions.meter_values(
                ctx.charge_point_id,
                connector_id=payload["connectorId"],
                transaction_id=payload.get("transactionId"),
                meter_value=payload["meterValue"],
            )
        except ValueError:
            raise PropertyConstraintError(
                "payload.meterValue has a timestamp that is not an ISO 8601 dateTime",
                {"path": "payload.meterValue"},
            ) from None
        return {}

    async def data_transfer_handler(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        result = await data_transfer.handle(
            ctx.charge_point_id, payload["vendorId"], payload.get("messageId"), payload.get("data")
        )
        answer: dict[str, Any] = {"status": result.status}
        if result.data is not None:
            answer["data"] = result.data
        return answer

    return {
        "BootNotification": boot_notification,
        "Heartbeat": Inline(heartbeat),
        "StatusNotification": status_notification,
        "Authorize": authorize,
        "StartTransaction": start_transaction,
        "StopTransaction": stop_transaction,
        "MeterValues": meter_values,
        "DataTransfer": data_transfer_handler,
    }
