"""The ``kilowatt`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from kilowatt import __version__
from kilowatt.config import ConfigError, Settings, load_settings
from kilowatt.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("kilowatt")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kilowatt", description="Kilowatt, an OCPP 1.6J Central System."
    )
    parser.add_argument("--version", action="version", version=f"kilowatt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the Central System",
        description="Run the Central System. Settings come from --config FILE (TOML), "
        "KILOWATT_* environment variables and these flags, in rising priority.",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 9000)")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default info"
    )
    return parser


async def _serve(settings: Settings) -> None:
    from kilowatt.app import create_app

    app = create_app(settings)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await app.stop()
    log.info("stopped")


def _run(settings: Settings) -> None:
    if settings.use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(_serve(settings))
            return
    asyncio.run(_serve(settings))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "serve":
        try:
            settings = load_settings(
                args.config, host=args.host, port=args.port, log_level=args.log_level
            )
        except ConfigError as exc:
            print(f"kilowatt: {exc}", file=sys.stderr)
            return 2
        configure_logging(settings.log_level, settings.log_format)
        try:
            _run(settings)
        except OSError as exc:
            print(
                f"kilowatt: cannot serve on {settings.host}:{settings.port}: {exc.strerror or exc}."
                " Is another server using the port? Choose another with --port.",
                file=sys.stderr,
            )
            return 1
        return 0
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
