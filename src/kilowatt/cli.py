"""The ``kilowatt`` command line.

``kilowatt serve`` runs the Central System; the management commands (``db``,
``charge-point``, ``id-tag``, ``transactions``, ``api-token``) work on the database
it uses: the same settings (``--config``, ``KILOWATT_*``, ``--database-url``), so
that in the directory ``kilowatt serve`` runs in they need no option at all.
``kilowatt call`` is a client of a running server's API. They live in the
``kilowatt.cli_*`` modules.
"""

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
from kilowatt.cli_api import add_api_commands
from kilowatt.cli_charge_points import add_charge_point_commands
from kilowatt.cli_common import EXIT_USAGE, run_command
from kilowatt.cli_config import add_config_commands
from kilowatt.cli_db import add_db_commands
from kilowatt.cli_id_tags import add_id_tag_commands
from kilowatt.cli_transactions import add_transaction_commands
from kilowatt.cluster import ClusterUnavailable
from kilowatt.config import ConfigError, Settings, load_settings
from kilowatt.logs import configure_logging
from kilowatt.simulator.cli import add_simulate_command

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
    # Cluster mode (kilowatt.cluster, kilowatt.workers).
    serve.add_argument("--database-url", help="sqlite:///FILE or postgresql+asyncpg://…")
    serve.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default 1; >1 needs Redis)"
    )
    serve.add_argument("--redis-url", help="redis://HOST:PORT/DB shared by the nodes of a cluster")
    add_db_commands(commands)
    add_charge_point_commands(commands)
    add_id_tag_commands(commands)
    add_transaction_commands(commands)
    add_api_commands(commands)
    add_simulate_command(commands)
    add_config_commands(commands)
    return parser


async def _serve(settings: Settings) -> None:
    from kilowatt.app import create_app, raise_file_limit, tune_interpreter

    raise_file_limit()
    app = create_app(settings)
    await app.start()
    tune_interpreter(settings)
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2), --help or --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "serve":
        try:
            settings = load_settings(
                args.config,
                host=args.host,
                port=args.port,
                log_level=args.log_level,
                database_url=args.database_url,
                workers=args.workers,
                redis_url=args.redis_url,
            )
        except ConfigError as exc:
            print(f"kilowatt: {exc}", file=sys.stderr)
            return 2
        configure_logging(settings.log_level, settings.log_format)
        if settings.workers > 1:
            from kilowatt.workers import supervise

            return supervise(settings)
        try:
            _run(settings)
        except ClusterUnavailable as exc:
            print(f"kilowatt: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(
                f"kilowatt: cannot serve on {settings.host}:{settings.port}: {exc.strerror or exc}."
                " Is another server using the port? Choose another with --port.",
                file=sys.stderr,
            )
            return 1
        return 0
    runner = getattr(args, "runner", None)
    if runner is not None:  # a client of a running server (kilowatt call): no database
        code: int = runner(args)
        return code
    handler = getattr(args, "handler", None)
    if handler is not None:
        return run_command(args, handler)
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
