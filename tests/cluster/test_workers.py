"""``kilowatt serve --workers 2``: two worker processes on one port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest
import redis.asyncio as aioredis

from kilowatt.cli import main
from tests.cluster.conftest import ClusterDatabase, api_client, finish, spawn
from tests.cluster.sim import SimChargePoint

pytestmark = pytest.mark.slow

TIMEOUT = 30.0


def test_more_than_one_worker_needs_redis(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KILOWATT_REDIS_URL", raising=False)
    assert main(["serve", "--workers", "2", "--port", "9"]) == 2
    assert "workers = 2 needs redis_url" in capsys.readouterr().err


async def node_pids(redis: aioredis.Redis) -> dict[str, int]:
    """Node id → pid of every live node (their heartbeat keys)."""
    keys = [key async for key in redis.scan_iter("kilowatt:0:node:*")]
    values = await redis.mget(keys) if keys else []
    return {
        info["node"]: int(info["pid"])
        for info in (orjson.loads(value) for value in values if value is not None)
    }


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for: {what}")


async def test_two_workers_share_the_port(
    cluster_database: ClusterDatabase, redis_url: str
) -> None:
    server = spawn("workers", cluster_database, redis_url, "--workers", "2", node_id="w")
    redis = aioredis.Redis.from_url(redis_url)
    points = [SimChargePoint(f"W-{i:02d}", timeout=TIMEOUT) for i in range(16)]
    try:

        def ready(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                output = server.output()
                assert server.process.poll() is None, output
                return output.count('event="worker ready"') >= count

            return check

        # Ready: a worker's gateway listens (its heartbeat in Redis comes earlier).
        await wait_for(ready(2), "both workers to serve")
        pids = await node_pids(redis)
        await asyncio.gather(*(cp.connect(server.ws) for cp in points))

        async def holders() -> dict[str, str]:
            values = await redis.mget([f"kilowatt:0:cp:{cp.id}" for cp in points])
            return {
                cp.id: value.decode().split(" ")[0]
                for cp, value in zip(points, values, strict=True)
                if value is not None
            }

        # The kernel spread the connections over both workers (2/65536 that it did not).
        held = await holders()
        assert set(held.values()) == {"w-1", "w-2"}, held
        on_worker_1 = [cp for cp in points if held[cp.id] == "w-1"]

        async with api_client(server, cluster_database) as api:
            for cp in points:  # each request lands on either worker
                response = await api.post(
                    f"/api/v1/charge-points/{cp.id}/calls/Reset", json={"type": "Soft"}
                )
                assert response.status_code == 200, response.text
                assert cp.received == [("Reset", {"type": "Soft"})]

            # A worker dies: the supervisor starts another; its charge points come back.
            os.kill(pids["w-1"], signal.SIGKILL)

            async def dropped() -> bool:
                return all(cp.closed.is_set() for cp in on_worker_1)

            await wait_for(dropped, "worker 1's charge points to lose their sockets")
            await wait_for(ready(3), "a new worker 1")
            assert await node_pids(redis) != pids
            assert "worker exited unexpectedly; restarting it" in server.output()
            await asyncio.gather(*(cp.connect(server.ws) for cp in on_worker_1))
            for cp in points:
                response = await api.post(
                    f"/api/v1/charge-points/{cp.id}/calls/Reset", json={"type": "Hard"}
                )
                assert response.status_code == 200, response.text
    except BaseException:
        print(server.output()[-6000:])  # the workers' side of a failure
        raise
    finally:
        await asyncio.gather(*(cp.close() for cp in points))
        await redis.aclose()
        started = time.monotonic()
        code = server.stop()
        stopped_in = time.monotonic() - started
        output = server.output()
        finish(server)
    print(f"\nsupervisor stopped in {stopped_in:.2f} s")
    print("\n".join(line for line in output.splitlines() if "kilowatt.workers" in line))
    assert code == 0, output[-3000:]
    assert "all workers stopped" in output
    assert stopped_in < 15
