"""Cluster mode: what a hop through Redis costs, and how fast a reconnect storm settles.

Run it from the repository root (it starts a throw-away PostgreSQL and Redis, like
the tests, and two ``kilowatt serve`` nodes sharing them)::

    .venv/bin/python bench/cluster.py --calls 300 --charge-points 300

1. **Hop**: the same API call (``POST …/calls/Reset``) for a charge point connected
   to node B, sent to node B (answered locally, no Redis) and to node A (through
   Redis to B and back), interleaved; medians and p95 of each, end to end over HTTP.
2. **Storm**: N charge points connect (half to each node) and boot; then every
   socket is dropped at once and all reconnect simultaneously, each to the other
   node, until every one has its BootNotification Accepted.

The load average is printed with the figures: on a shared machine they vary a lot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster.conftest import (  # noqa: E402
    _create_database,
    api_client,
    finish,
    spawn,
    wait_ready,
)
from tests.cluster.sim import SimChargePoint  # noqa: E402
from tests.servers import start_postgres, start_redis  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def run(calls: int, count: int) -> None:
    postgres, redis = start_postgres(), start_redis()
    try:
        database = await _create_database(postgres.url)
        a, b = (
            spawn(name, database, redis.url, node_id=name, log_level="warning") for name in "ab"
        )
        try:
            await asyncio.to_thread(wait_ready, a, b)
            cp = SimChargePoint("HOP", timeout=60)
            await cp.connect(b.ws)
            local, remote = [], []
            async with api_client(b, database) as on_b, api_client(a, database) as via_a:
                for index in range(calls + 20):
                    for client, times in ((on_b, local), (via_a, remote)):
                        started = time.perf_counter()
                        response = await client.post(
                            "/api/v1/charge-points/HOP/calls/Reset", json={"type": "Soft"}
                        )
                        elapsed = (time.perf_counter() - started) * 1000
                        assert response.status_code == 200, response.text
                        if index >= 20:  # warm-up
                            times.append(elapsed)
            await cp.close()

            points = [SimChargePoint(f"STORM-{i:04d}", timeout=120) for i in range(count)]
            nodes = [a, b]
            started = time.perf_counter()
            await asyncio.gather(*(p.connect(nodes[i % 2].ws) for i, p in enumerate(points)))
            first = time.perf_counter() - started
            for point in points:
                point.abort()
            started = time.perf_counter()
            await asyncio.gather(*(p.connect(nodes[(i + 1) % 2].ws) for i, p in enumerate(points)))
            storm = time.perf_counter() - started
            await asyncio.gather(*(p.close() for p in points))
        finally:
            finish(a, b)
    finally:
        postgres.stop()
        redis.stop()

    load = os.getloadavg()
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {os.cpu_count()} CPUs\n")
    print("| API call (Reset) | median ms | p95 ms |")
    print("|---|---:|---:|")
    print(
        f"| on the node holding the socket | {statistics.median(local):.2f} | "
        f"{percentile(local, 0.95):.2f} |"
    )
    print(
        f"| through another node (Redis) | {statistics.median(remote):.2f} | "
        f"{percentile(remote, 0.95):.2f} |"
    )
    print(
        f"\n{count} charge points, 2 nodes: first connection + Accepted {first:.2f} s; "
        f"reconnect storm (all at once, each to the other node) {storm:.2f} s"
    )
    print(f"\nreproduce: .venv/bin/python bench/cluster.py --calls {calls} --charge-points {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=300, help="API calls per path")
    parser.add_argument("--charge-points", type=int, default=300, help="for the storm")
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.charge_points))


if __name__ == "__main__":
    main()
