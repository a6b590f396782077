"""Kilowatt's OCPP WebSocket path alone: the gateway with in-memory handlers, no storage.

What a message costs between the socket and the handler and back — WebSocket
framing, the session (JSON, schema validation of the CALL and of the answer),
routing, the write — without the database and the services, so that changes to
that path can be measured apart from everything else. Run it under the usual
load, through ``bench/compare.py``::

    .venv/bin/python bench/compare.py --only kilowatt \\
        --kilowatt-cmd "{python} bench/gateway_server.py --port {port}"

or by hand::

    .venv/bin/python bench/gateway_server.py --port 9100 [--no-uvloop]

Every charge point is accepted (security profile 0, no credentials); the handlers
answer what ``bench/load.py`` expects (Accepted, a transaction id).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
from typing import Any

from kilowatt.clock import SystemClock, format_datetime
from kilowatt.gateway.auth import InMemoryCredentialStore
from kilowatt.gateway.registry import ConnectionRegistry
from kilowatt.gateway.server import Gateway, GatewayConfig
from kilowatt.ocpp16.routes import protocol_spec
from kilowatt.protocol.router import CallContext, Router

ACCEPTED = {"status": "Accepted"}


def router() -> Router:
    clock = SystemClock()
    transaction_ids = itertools.count(1)

    async def boot(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted", "currentTime": format_datetime(clock.now()), "interval": 300}

    async def heartbeat(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": format_datetime(clock.now())}

    async def authorize(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"idTagInfo": ACCEPTED}

    async def start(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"transactionId": next(transaction_ids), "idTagInfo": ACCEPTED}

    async def acknowledge(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    return Router(
        {
            "BootNotification": boot,
            "Heartbeat": heartbeat,
            "Authorize": authorize,
            "StartTransaction": start,
            "StopTransaction": acknowledge,
            "StatusNotification": acknowledge,
            "MeterValues": acknowledge,
        }
    )


async def serve(host: str, port: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    gateway = Gateway(
        GatewayConfig(host=host, port=port),
        protocol_spec(),
        router(),
        InMemoryCredentialStore(),
        ConnectionRegistry(),
    )
    await gateway.start()
    print(f"listening on ws://{host}:{gateway.port}/ocpp/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args()
    if args.no_uvloop:
        asyncio.run(serve(args.host, args.port))
    else:
        import uvloop

        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
