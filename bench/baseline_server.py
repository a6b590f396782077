"""Baseline OCPP 1.6J Central System: what a Python user would write with the ``ocpp`` package.

This is the reference point for the benchmark in ``bench/compare.py``. It is intentionally
plain: it follows the examples shipped with the ``ocpp`` package (``ocpp`` 2.1.0 on top of
the ``websockets`` asyncio server), keeps the library defaults (including the JSON-schema
validation of every message that ``ocpp.v16.ChargePoint`` does) and adds nothing clever.

Run it::

    .venv/bin/python bench/baseline_server.py --host 127.0.0.1 --port 9100 [--uvloop]

Charge points connect to ``ws://HOST:PORT/ocpp/{chargePointId}`` with the subprotocol
``ocpp1.6``. Once the server accepts connections it prints exactly one line
``listening on ws://HOST:PORT/ocpp/`` to stdout. Stop it with Ctrl+C / SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from ocpp.routing import on as ocpp_on
from ocpp.v16 import ChargePoint as cp
from ocpp.v16 import call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    DataTransferStatus,
    RegistrationStatus,
)
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

LOGGER = logging.getLogger("baseline")

SUBPROTOCOL = Subprotocol("ocpp1.6")
PATH_PREFIX = "/ocpp/"
HEARTBEAT_INTERVAL_S = 300

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def on(action: Action) -> Callable[[_Handler], _Handler]:
    """``ocpp.routing.on`` with type hints (the ``ocpp`` package ships none)."""
    return cast(Callable[[_Handler], _Handler], ocpp_on(action))


# Transaction ids are unique across all charge points of this process.
_transaction_ids = itertools.count(1)


def utc_now() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, e.g. ``2025-01-31T12:00:00.123Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class ChargePoint(cp):  # type: ignore[misc]
    """Handlers for the CALLs a charge point sends to the Central System."""

    @on(Action.boot_notification)
    def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **kwargs: Any
    ) -> call_result.BootNotification:
        return call_result.BootNotification(
            current_time=utc_now(),
            interval=HEARTBEAT_INTERVAL_S,
            status=RegistrationStatus.accepted,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **kwargs: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=utc_now())

    @on(Action.status_notification)
    def on_status_notification(
        self, connector_id: int, error_code: str, status: str, **kwargs: Any
    ) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.meter_values)
    def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any
    ) -> call_result.MeterValues:
        return call_result.MeterValues()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **kwargs: Any) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted))

    @on(Action.start_transaction)
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kwargs: Any
    ) -> call_result.StartTransaction:
        return call_result.StartTransaction(
            transaction_id=next(_transaction_ids),
            id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted),
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **kwargs: Any
    ) -> call_result.StopTransaction:
        return call_result.StopTransaction(
            id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted)
        )

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kwargs: Any) -> call_result.DataTransfer:
        # This Central System knows no vendor-specific extensions.
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)


async def on_connect(websocket: ServerConnection) -> None:
    """Handle one charge point connection (``/ocpp/{chargePointId}``)."""
    request = websocket.request
    path = request.path if request is not None else ""
    if not path.startswith(PATH_PREFIX) or path.rstrip("/") == PATH_PREFIX.rstrip("/"):
        LOGGER.warning("rejecting %r: connect to %s{chargePointId}", path, PATH_PREFIX)
        await websocket.close(code=1008, reason=f"use {PATH_PREFIX}{{chargePointId}}")
        return
    if websocket.subprotocol != SUBPROTOCOL:
        LOGGER.warning("rejecting %r: client must offer subprotocol %s", path, SUBPROTOCOL)
        await websocket.close(code=1002, reason=f"subprotocol {SUBPROTOCOL} required")
        return

    charge_point_id = path.rstrip("/").rsplit("/", 1)[-1]
    charge_point = ChargePoint(charge_point_id, websocket)
    # A charge point going away is normal, not an error worth a traceback.
    with contextlib.suppress(ConnectionClosed):
        await charge_point.start()


async def serve_forever(host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, then close all connections and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with serve(on_connect, host, port, subprotocols=[SUBPROTOCOL]):
        print(f"listening on ws://{host}:{port}{PATH_PREFIX}", flush=True)
        await stop.wait()
    # Leaving the context manager closes the listening socket and all connections.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Baseline OCPP 1.6J Central System built on the 'ocpp' package."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9100, help="TCP port (default 9100)")
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop instead of the asyncio default loop"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print(
                "error: --uvloop was given but uvloop is not installed; "
                "install it (pip install uvloop) or drop --uvloop",
                file=sys.stderr,
            )
            return 2
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    try:
        asyncio.run(serve_forever(args.host, args.port))
    except OSError as exc:
        print(
            f"error: cannot listen on {args.host}:{args.port}: {exc}; pick a free port with --port",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
