"""Remote control: every CS→CP action, generic and typed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from kilowatt.api.deps import Admin, ChargePointId, Context
from kilowatt.ocpp16.routes import CENTRAL_TO_CHARGE_POINT

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/charge-points/{charge_point_id}", tags=["remote control"])

Timeout = Annotated[
    float | None,
    Query(gt=0, le=300, description="Seconds to wait for the answer (default: call_timeout)"),
]

ACTIONS = ", ".join(sorted(CENTRAL_TO_CHARGE_POINT))


@router.post(
    "/calls/{action}",
    summary="Send any OCPP 1.6 CALL to a charge point",
    description=(
        "The body is the OCPP payload exactly as in the specification (camelCase). It is "
        "validated against the official schema before it is sent. Answers: 200 with the "
        "charge point's CALLRESULT payload; 404 unknown charge point or action; 409 not "
        "connected; 422 invalid payload; 502 the charge point answered CALLERROR (code, "
        "description and details in the error); 504 no answer in time. Actions: " + ACTIONS
    ),
)
async def generic_call(
    ctx: Context,
    token: Admin,
    charge_point_id: ChargePointId,
    action: Annotated[str, Path(description="An OCPP 1.6 CS→CP action, e.g. Reset")],
    payload: Annotated[dict[str, Any], Body(examples=[{"type": "Soft"}])],
    timeout: Timeout = None,
) -> dict[str, Any]:
    return await ctx.commands.call(charge_point_id, action, payload, timeout=timeout)


class _Payload(BaseModel):
    # strict: no true → 1 or "42" → 42; the generic endpoint refuses those too.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    def ocpp(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class RemoteStart(_Payload):
    id_tag: str = Field(alias="idTag", min_length=1, max_length=20)
    connector_id: int | None = Field(None, alias="connectorId", gt=0)
    charging_profile: dict[str, Any] | None = Field(None, alias="chargingProfile")


class RemoteStop(_Payload):
    transaction_id: int = Field(alias="transactionId")


class Reset(_Payload):
    type: Literal["Hard", "Soft"]


class Unlock(_Payload):
    connector_id: int = Field(alias="connectorId", gt=0)


class ChangeAvailability(_Payload):
    connector_id: int = Field(alias="connectorId", ge=0)
    type: Literal["Inoperative", "Operative"]


class TriggerMessage(_Payload):
    requested_message: Literal[
        "BootNotification",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StatusNotification",
    ] = Field(alias="requestedMessage")
    connector_id: int | None = Field(None, alias="connectorId", ge=0)


class DataTransfer(_Payload):
    vendor_id: str = Field(alias="vendorId", min_length=1, max_length=255)
    message_id: str | None = Field(None, alias="messageId", max_length=50)
    data: str | None = None


def _typed(action: str, path: str, model: type[_Payload] | None, summary: str) -> None:
    if model is None:

        async def endpoint_empty(
            ctx: Context, token: Admin, charge_point_id: ChargePointId, timeout: Timeout = None
        ) -> dict[str, Any]:
            return await ctx.commands.call(charge_point_id, action, {}, timeout=timeout)

        router.add_api_route(path, endpoint_empty, methods=["POST"], summary=summary)
        return

    async def endpoint(
        ctx: Context,
        token: Admin,
        charge_point_id: ChargePointId,
        body: model,  # type: ignore[valid-type]
        timeout: Timeout = None,
    ) -> dict[str, Any]:
        payload: _Payload = body
        return await ctx.commands.call(charge_point_id, action, payload.ocpp(), timeout=timeout)

    # The body's model is chosen at run time: give FastAPI the class, not a name.
    endpoint.__annotations__["body"] = model
    router.add_api_route(path, endpoint, methods=["POST"], summary=summary)


_typed("RemoteStartTransaction", "/remote-start", RemoteStart, "Start a transaction remotely")
_typed("RemoteStopTransaction", "/remote-stop", RemoteStop, "Stop a transaction remotely")
_typed("Reset", "/reset", Reset, "Reset the charge point (Hard or Soft)")
_typed("UnlockConnector", "/unlock", Unlock, "Unlock a connector")
_typed("ChangeAvailability", "/availability", ChangeAvailability, "Make a connector (in)operative")
_typed("ClearCache", "/clear-cache", None, "Clear the authorization cache")
_typed("TriggerMessage", "/trigger", TriggerMessage, "Ask the charge point to send a message")
_typed("DataTransfer", "/data-transfer", DataTransfer, "Send vendor-specific data")
