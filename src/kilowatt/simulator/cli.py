"""``kilowatt simulate``: simulated charge points against a running Central System."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from kilowatt.simulator.runner import (
    SimulationConfig,
    SimulationError,
    SimulationResult,
    run_simulation,
)
from kilowatt.simulator.scenario import ScenarioError, load_scenario

__all__ = ["add_simulate_command", "simulate_command"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_simulate_command(commands: Any) -> None:
    """Add ``simulate`` to the ``kilowatt`` subcommands (``runner``: no database)."""
    parser = commands.add_parser(
        "simulate",
        help="simulate OCPP 1.6 charge points against a Central System",
        description="Simulated charge points connect to URL + charge point id, boot, run "
        "charging sessions with meter values and answer every CS→CP call of OCPP 1.6. "
        "A progress line goes to standard error once per second; the summary to standard "
        "output. Scenarios: docs/simulator.md.",
    )
    parser.add_argument(
        "--url", required=True, help="the OCPP endpoint, e.g. ws://127.0.0.1:9000/ocpp/"
    )
    parser.add_argument(
        "--charge-points", type=_positive_int, default=1, metavar="N", help="default 1"
    )
    parser.add_argument(
        "--connectors", type=_positive_int, default=2, metavar="N", help="per charge point (2)"
    )
    parser.add_argument(
        "--scenario", default="builtin", help="a .toml or .json file, or builtin (default)"
    )
    parser.add_argument(
        "--duration", type=_positive_float, metavar="S", help="seconds (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--id-prefix", default="SIM", help="charge point ids are PREFIX00001… (default SIM)"
    )
    parser.add_argument(
        "--password",
        help="Basic auth password of every charge point (security profile 1 and 2); "
        "default: $KILOWATT_SIMULATE_PASSWORD when set",
    )
    parser.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="K",
        help="share the charge points among K processes (one per core for large N)",
    )
    parser.add_argument(
        "--call-timeout", type=_positive_float, default=30.0, metavar="S", help="default 30"
    )
    parser.add_argument(
        "--transport",
        choices=["auto", "picows", "websockets"],
        default="auto",
        help="WebSocket client (auto: picows when installed)",
    )
    parser.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(runner=simulate_command)


def simulate_command(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"kilowatt simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = SimulationConfig(
        url=args.url,
        charge_points=args.charge_points,
        connectors=args.connectors,
        scenario=scenario,
        duration=args.duration,
        id_prefix=args.id_prefix,
        password=args.password or os.environ.get("KILOWATT_SIMULATE_PASSWORD") or None,
        processes=args.processes,
        call_timeout=args.call_timeout,
        transport=args.transport,
        seed=args.seed,
        progress=None if args.quiet else sys.stderr,
    )
    try:
        config.check()
        result = _run(_simulate(config))
    except SimulationError as exc:
        print(f"kilowatt simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(result.to_dict()), flush=True)
    else:
        print(result.summary(), flush=True)
    if result.boots == 0:
        print(
            "kilowatt simulate: no charge point was accepted; is the Central System running "
            "at --url, and does it accept these charge points (boot_policy, --password)?",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


async def _simulate(config: SimulationConfig) -> SimulationResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    return await run_simulation(config, stop=stop)


def _run(coroutine: Any) -> SimulationResult:
    try:
        import uvloop
    except ImportError:
        result: SimulationResult = asyncio.run(coroutine)
        return result
    result = uvloop.run(coroutine)
    return result
