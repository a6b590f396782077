"""Core profile handlers (OCPP 1.6 §4, §6): decode, call one service, encode.

Until the storage layer lands these answer from configuration alone; the routing
table stays the same when services take over.
"""

from __future__ import annotations

import itertools
from typing import Any

from kilowatt.clock import Clock, format_datetime
from kilowatt.protocol.router import CallContext, Handler

__all__ = ["core_routes"]


def core_routes(*, heartbeat_interval: int, clock: Clock) -> dict[str, Handler]:
    transaction_ids = itertools.count(1)

    async def boot_notification(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        # OCPP 1.6 §4.2: the interval is the heartbeat interval once Accepted.
        return {
            "status": "Accepted",
            "currentTime": format_datetime(clock.now()),
            "interval": heartbeat_interval,
        }

    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": format_datetime(clock.now())}

    async def status_notification(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def authorize(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"idTagInfo": {"status": "Accepted"}}

    async def start_transaction(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"transactionId": next(transaction_ids), "idTagInfo": {"status": "Accepted"}}

    async def stop_transaction(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        # OCPP 1.6 §6.51: idTagInfo only when the request carried an idTag.
        return {"idTagInfo": {"status": "Accepted"}} if "idTag" in payload else {}

    async def meter_values(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def data_transfer(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        # OCPP 1.6 §4.3: no vendor handlers registered yet.
        return {"status": "UnknownVendorId"}

    return {
        "BootNotification": boot_notification,
        "Heartbeat": heartbeat,
        "StatusNotification": status_notification,
        "Authorize": authorize,
        "StartTransaction": start_transaction,
        "StopTransaction": stop_transaction,
        "MeterValues": meter_values,
        "DataTransfer": data_transfer,
    }
