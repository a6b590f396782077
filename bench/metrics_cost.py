"""What the Prometheus hooks cost per message: the same connection path with and without.

``bench/protocol.py --metrics`` compares with the ``ocpp`` baseline; this one compares
Kilowatt with itself, interleaving short rounds of both variants (so that a busy
machine slows both alike) timed in CPU time, and reports the fastest round of each (the
least disturbed) and the medians. It also times the hooks alone (``timeit``): what one
handled CALL adds, without the noise of everything else::

    .venv/bin/python bench/metrics_cost.py [--rounds 40] [--messages 2000] [--no-uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import timeit
from collections.abc import Awaitable, Callable

from protocol import MESSAGES, kilowatt_route


async def _round(route: Callable[[str], Awaitable[None]], message: str, count: int) -> float:
    # CPU time of this process: a busy machine's other processes do not count.
    start = time.process_time()
    for _ in range(count):
        await route(message)
    return (time.process_time() - start) / count


async def main_async(rounds: int, messages: int) -> int:
    logging.disable(logging.CRITICAL)
    print(
        "| message | without µs/msg (min / median) | with metrics µs/msg (min / median) "
        "| cost µs/msg (min / median) |"
    )
    print("|---|---:|---:|---:|")
    for kind, message in MESSAGES.items():
        plain, _ = kilowatt_route(metrics=False)
        measured, _ = kilowatt_route(metrics=True)
        for route in (plain, measured):  # warm-up
            await _round(route, message, 500)
        without: list[float] = []
        with_: list[float] = []
        for _ in range(rounds):
            without.append(await _round(plain, message, messages))
            with_.append(await _round(measured, message, messages))
        a, b = min(without) * 1e6, min(with_) * 1e6
        am, bm = statistics.median(without) * 1e6, statistics.median(with_) * 1e6
        print(
            f"| {kind} | {a:.2f} / {am:.2f} | {b:.2f} / {bm:.2f} "
            f"| {b - a:+.2f} ({(b - a) / a:+.1%}) / {bm - am:+.2f} ({(bm - am) / am:+.1%}) |"
        )
    print()
    _hooks_alone()
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")
    return 0


def _hooks_alone() -> None:
    """What the connection adds per handled CALL: two clocks and ``call_handled``."""
    from time import perf_counter

    from kilowatt.metrics import Metrics
    from kilowatt.ocpp16.routes import protocol_spec
    from kilowatt.protocol.frames import build_call_result

    metrics = Metrics(actions=protocol_spec().known, process_metrics=False)
    frame = build_call_result("m-1", {})

    def handled() -> None:
        started = perf_counter()
        metrics.call_handled("BENCH", "Heartbeat", frame, perf_counter() - started)

    number = 200_000
    best = min(timeit.repeat(handled, timer=time.process_time, number=number, repeat=7)) / number
    print(f"hooks alone (perf_counter x2 + call_handled), best of 7: {best * 1e9:.0f} ns per CALL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="rounds per variant")
    parser.add_argument("--messages", type=int, default=2000, help="messages per round")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args()
    coroutine = main_async(args.rounds, args.messages)
    if not args.no_uvloop:
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


if __name__ == "__main__":
    raise SystemExit(main())
