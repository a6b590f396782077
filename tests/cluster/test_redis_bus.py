"""The Redis side of cluster mode, in one process, on a real Redis.

Two :class:`ClusterNode` objects (two node ids, two Redis links) stand for two
processes; their "connections" are fakes that answer, fail or stay silent on
demand, so every path of a cross-node call, of presence and of the event bus is
exercised without WebSockets (the process-level tests are in test_cluster.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from kilowatt.bus.events import Event
from kilowatt.bus.redis import RedisCommandBus, RemoteCallFailed
from kilowatt.bus.redis_events import RedisEventBus
from kilowatt.clock import FakeClock, SystemClock
from kilowatt.cluster.link import RedisLink
from kilowatt.cluster.node import ClusterNode
from kilowatt.cluster.presence import Holder, Presence
from kilowatt.domain.models import ChargePoint
from kilowatt.protocol.errors import (
    CallErrorReceived,
    CallTimeout,
    NotConnected,
    OutgoingValidationError,
    PropertyConstraintError,
)
from kilowatt.protocol.session import InvalidCallResult
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import upgrade

TIMEOUT = 5.0


async def eventually(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not await predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {TIMEOUT} s waiting for: {what}")


class FakeConnection:
    """A charge point's connection: answers with ``behaviour`` (a result or an exception)."""

    def __init__(self, charge_point_id: str) -> None:
        self.charge_point_id = charge_point_id
        self.behaviour: dict[str, Any] | BaseException | None = {"status": "Accepted"}
        self.calls: list[tuple[str, dict[str, Any], float | None]] = []
        self.closed: tuple[int, str] | None = None

    async def call(
        self, action: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        self.calls.append((action, payload, timeout))
        behaviour = self.behaviour
        if isinstance(behaviour, BaseException):
            raise behaviour
        if behaviour is None:  # silent
            await asyncio.sleep(3600)
        assert isinstance(behaviour, dict)
        return behaviour

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class FakeRegistry:
    def __init__(self) -> None:
        self.connections: dict[str, FakeConnection] = {}

    def get(self, charge_point_id: str) -> FakeConnection | None:
        return self.connections.get(charge_point_id)


class StateHooks:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, bool]] = []

    async def connected(
        self, charge_point_id: str, *, remote_address: str, security_profile: int
    ) -> None:
        self.log.append(("connected", charge_point_id, False))

    async def disconnected(self, charge_point_id: str, *, superseded: bool = False) -> None:
        self.log.append(("disconnected", charge_point_id, superseded))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    await upgrade(store)
    try:
        yield store
    finally:
        await store.close()


Nodes = Callable[..., Awaitable[tuple[ClusterNode, FakeRegistry]]]


@pytest.fixture
async def make_node(redis: aioredis.Redis, redis_url: str, store: SqlStore) -> AsyncIterator[Nodes]:
    started: list[ClusterNode] = []

    async def make(
        name: str, *, ttl: float = 10.0, grace: float = 2.0, clock: Any = None
    ) -> tuple[ClusterNode, FakeRegistry]:
        registry = FakeRegistry()
        node = ClusterNode(
            redis_url=redis_url,
            node_id=f"{name}-{uuid.uuid4().hex[:6]}",
            presence_ttl=ttl,
            call_timeout=1.0,
            registry=registry,  # type: ignore[arg-type]
            store=store,
            clock=clock or SystemClock(),
        )
        node.commands.reply_grace = grace
        await node.start()
        started.append(node)
        return node, registry

    try:
        yield make
    finally:
        for node in started:
            async with asyncio.timeout(TIMEOUT):
                await node.stop()


async def connect(
    node: ClusterNode, registry: FakeRegistry, charge_point_id: str
) -> FakeConnection:
    """What the gateway does for a new connection: hooks, then the registry."""
    connection = FakeConnection(charge_point_id)
    await node.hooks(StateHooks()).connected(
        charge_point_id, remote_address="127.0.0.1:1", security_profile=0
    )
    registry.connections[charge_point_id] = connection
    return connection


# ------------------------------------------------------------------- presence


async def test_presence_claim_release_and_renew(redis: aioredis.Redis, redis_url: str) -> None:
    link = RedisLink(redis_url)
    try:
        presence = Presence(link, "node-a", ttl=10.0)
        assert await presence.claim("CP1", "1") is None
        assert await presence.holder("CP1") == Holder("node-a", "1")
        ttl = await redis.pttl(presence.key("CP1"))
        assert 9_000 < ttl <= 10_000

        other = Presence(link, "node-b", ttl=10.0)
        assert await other.claim("CP1", "7") == Holder("node-a", "1")
        # node-a's late release must not drop node-b's claim.
        assert await presence.release("CP1", "1") is False
        assert await presence.holder("CP1") == Holder("node-b", "7")

        # Renewal: kept, put back when expired, reported when taken.
        await presence.claim("CP2", "2")
        await redis.pexpire(presence.key("CP2"), 50)
        assert await presence.renew({"CP1": "1", "CP2": "2", "CP3": "3"}) == ["CP1"]
        assert await presence.holder("CP2") == Holder("node-a", "2")
        assert await redis.pttl(presence.key("CP2")) > 9_000
        assert await presence.holder("CP3") == Holder("node-a", "3")

        assert await presence.release("CP2", "2") is True
        assert await presence.holder("CP2") is None
        assert await presence.holders(["CP1", "CP2", "CP3"]) == [
            Holder("node-b", "7"),
            None,
            Holder("node-a", "3"),
        ]
    finally:
        await link.close()


async def test_a_burst_of_commands_waits_for_a_free_redis_connection(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reconnect storm claims and releases thousands of charge points at once: more
    # commands in flight than the pool has connections must wait, not fail.
    from kilowatt.cluster import link as link_module

    monkeypatch.setattr(link_module, "POOL_SIZE", 2)
    link = RedisLink(redis_url)
    try:
        key = link.key("empty", uuid.uuid4().hex)
        results = await asyncio.gather(*(link.client.blpop([key], timeout=0.1) for _ in range(6)))
        assert results == [None] * 6
    finally:
        await link.close()


async def test_presence_expires_without_renewal(redis: aioredis.Redis, redis_url: str) -> None:
    link = RedisLink(redis_url)
    try:
        presence = Presence(link, "node-a", ttl=1.0)
        await presence.claim("CP1", "1")
        await presence.beat(b"{}")
        started = asyncio.get_running_loop().time()

        async def gone() -> bool:
            return await redis.exists(presence.key("CP1"), presence.node_key("node-a")) == 0

        await eventually(gone, "the keys of a node that stopped renewing to expire")
        assert asyncio.get_running_loop().time() - started < 1.5
    finally:
        await link.close()


async def test_renewal_closes_a_connection_another_node_took(make_node: Nodes) -> None:
    a, registry = await make_node("a")
    connection = await connect(a, registry, "CP1")
    # Another node took it while the close message got lost.
    await Presence(a.link, "node-z", 10.0).claim("CP1", "9")
    await a.renew()
    await eventually(
        lambda: _value(connection.closed is not None), "the stale connection to be closed"
    )


async def _value(value: bool) -> bool:
    return value


class FailingHooks(StateHooks):
    async def connected(
        self, charge_point_id: str, *, remote_address: str, security_profile: int
    ) -> None:
        raise RuntimeError("database down")


async def test_a_connection_that_fails_to_set_up_leaves_no_claim(make_node: Nodes) -> None:
    a, _ = await make_node("a")
    with pytest.raises(RuntimeError):
        await a.hooks(FailingHooks()).connected(
            "CP1", remote_address="127.0.0.1:1", security_profile=0
        )
    assert await a.presence.holder("CP1") is None
    assert a.held == {}


async def test_renewal_drops_claims_without_a_connection(make_node: Nodes) -> None:
    a, registry = await make_node("a")
    await connect(a, registry, "CP1")
    await connect(a, registry, "CP2")
    del registry.connections["CP2"]  # gone without its disconnection (a bug elsewhere)
    await a.renew()
    assert set(a.held) == {"CP1"}
    assert await a.presence.holder("CP2") is None
    assert (await a.presence.holder("CP1") or Holder("", "")).node_id == a.node_id


# ------------------------------------------------------------ commands across


async def test_call_reaches_the_node_holding_the_charge_point(make_node: Nodes) -> None:
    a, _ = await make_node("a")
    b, registry_b = await make_node("b")
    connection = await connect(b, registry_b, "CP1")
    connection.behaviour = {"status": "Accepted", "echo": 1}

    result = await a.commands.call("CP1", "Reset", {"type": "Soft"}, timeout=2.5)

    assert result == {"status": "Accepted", "echo": 1}
    assert connection.calls == [("Reset", {"type": "Soft"}, 2.5)]
    assert (a.commands.remote_calls, b.commands.served_calls) == (1, 1)
    assert await a.commands.is_connected("CP1")
    assert not await a.commands.is_connected("CP-NONE")


@pytest.mark.parametrize(
    "error",
    [
        CallErrorReceived("NotSupported", "no such thing", {"hint": [1, 2]}),
        CallTimeout("no answer in 1 s"),
        NotConnected("the connection closed"),
        InvalidCallResult(PropertyConstraintError("status: bad value", {"field": "status"})),
        OutgoingValidationError("Reset", PropertyConstraintError("type: bad", {"f": "type"})),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_the_holders_exception_comes_back_as_the_same_type(
    make_node: Nodes, error: Exception
) -> None:
    a, _ = await make_node("a")
    b, registry_b = await make_node("b")
    (await connect(b, registry_b, "CP1")).behaviour = error

    with pytest.raises(type(error)) as raised:
        await a.commands.call("CP1", "Reset", {"type": "Soft"}, timeout=1.0)

    got: Any = raised.value
    assert str(got) == str(error)
    if isinstance(error, CallErrorReceived):
        assert (got.code, got.description, got.details) == (
            "NotSupported",
            "no such thing",
            {"hint": [1, 2]},
        )
    if isinstance(error, InvalidCallResult | OutgoingValidationError):
        assert type(got.error) is PropertyConstraintError
        assert got.error.details == error.error.details


async def test_an_unexpected_failure_on_the_holder(make_node: Nodes) -> None:
    a, _ = await make_node("a")
    b, registry_b = await make_node("b")
    (await connect(b, registry_b, "CP1")).behaviour = RuntimeError("boom")
    with pytest.raises(RemoteCallFailed, match="RuntimeError: boom"):
        await a.commands.call("CP1", "Reset", {"type": "Soft"}, timeout=1.0)


async def test_not_connected_anywhere(make_node: Nodes) -> None:
    a, _ = await make_node("a")
    with pytest.raises(NotConnected):
        await a.commands.call("CP-NONE", "Reset", {"type": "Soft"})


async def test_a_dead_nodes_key_is_not_connected_at_once(
    make_node: Nodes, redis: aioredis.Redis
) -> None:
    a, _ = await make_node("a")
    await Presence(a.link, "ghost", 10.0).claim("CP1", "1")  # nobody listens for "ghost"
    started = asyncio.get_running_loop().time()
    with pytest.raises(NotConnected, match="gone"):
        await a.commands.call("CP1", "Reset", {"type": "Soft"}, timeout=5.0)
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_a_holder_that_never_answers_is_a_timeout(
    make_node: Nodes, redis: aioredis.Redis
) -> None:
    a, _ = await make_node("a", grace=0.3)
    mute = redis.pubsub()
    await mute.subscribe(a.link.key("to", "mute"))  # listens, never answers
    try:
        await Presence(a.link, "mute", 10.0).claim("CP1", "1")
        started = asyncio.get_running_loop().time()
        with pytest.raises(CallTimeout, match="no answer from node mute"):
            await a.commands.call("CP1", "Reset", {"type": "Soft"}, timeout=0.5)
        elapsed = asyncio.get_running_loop().time() - started
        assert 0.7 < elapsed < 2.0
    finally:
        await mute.aclose()


async def test_a_local_charge_point_never_touches_redis(redis_url: str) -> None:
    registry = FakeRegistry()
    registry.connections["CP1"] = FakeConnection("CP1")
    # Nothing listens on port 1: any Redis command would fail.
    link = RedisLink("redis://127.0.0.1:1/0")
    bus = RedisCommandBus(registry, link, Presence(link, "a", 10.0), default_timeout=1.0)
    try:
        assert await bus.call("CP1", "Reset", {"type": "Hard"}) == {"status": "Accepted"}
        assert await bus.is_connected("CP1")
        assert (bus.local_calls, bus.remote_calls) == (1, 0)
        # And without the local connection, a Redis failure is "not connected".
        with pytest.raises(NotConnected, match="Redis"):
            await bus.call("CP2", "Reset", {"type": "Hard"})
    finally:
        await link.close()


async def test_cross_node_hop_cost(make_node: Nodes) -> None:
    """Not a benchmark: the figure the README quotes is measured the same way."""
    a, registry_a = await make_node("a")
    b, registry_b = await make_node("b")
    await connect(a, registry_a, "LOCAL")
    await connect(b, registry_b, "REMOTE")
    loop = asyncio.get_running_loop()
    rounds = 200

    async def timed(charge_point_id: str) -> float:
        started = loop.time()
        for _ in range(rounds):
            await a.commands.call(charge_point_id, "Reset", {"type": "Soft"})
        return (loop.time() - started) / rounds * 1000

    local, remote = await timed("LOCAL"), await timed("REMOTE")
    print(f"\ncall via the bus: local {local:.3f} ms, across nodes {remote:.3f} ms")
    assert remote < 50


# ----------------------------------------------------- duplicate connections


async def test_a_new_connection_on_another_node_closes_the_old_one(make_node: Nodes) -> None:
    a, registry_a = await make_node("a")
    b, registry_b = await make_node("b")
    old = await connect(a, registry_a, "CP1")
    hooks_a = StateHooks()

    await connect(b, registry_b, "CP1")
    await eventually(lambda: _value(old.closed is not None), "the old connection to close")
    assert old.closed == (1000, f"replaced by a new connection on node {b.node_id}")

    # The old connection's end: no release (b holds it), the database left alone.
    del registry_a.connections["CP1"]
    await a.hooks(hooks_a).disconnected("CP1")
    assert hooks_a.log == [("disconnected", "CP1", True)]
    assert (await b.presence.holder("CP1") or Holder("", "")).node_id == b.node_id


async def test_a_close_for_an_older_connection_spares_the_newer(make_node: Nodes) -> None:
    a, registry_a = await make_node("a")
    await connect(a, registry_a, "CP1")
    old_token = a.held["CP1"]
    newer = await connect(a, registry_a, "CP1")  # reconnected to a again
    a._on_message(b'{"t": "close", "cp": "CP1", "token": "%s", "by": "b"}' % old_token.encode())
    await asyncio.sleep(0.1)
    assert newer.closed is None


async def test_graceful_stop_releases_everything(make_node: Nodes, redis: aioredis.Redis) -> None:
    a, registry_a = await make_node("a")
    await connect(a, registry_a, "CP1")
    await a.hooks(StateHooks()).disconnected("CP1")
    await a.stop()
    assert await redis.keys(a.link.key("*")) == []


# ------------------------------------------------------------ reconciliation


async def test_reconcile_clears_only_what_nobody_holds(make_node: Nodes, store: SqlStore) -> None:
    clock = FakeClock(datetime(2026, 5, 1, tzinfo=UTC))
    a, registry_a = await make_node("a", clock=clock)
    b, registry_b = await make_node("b", clock=clock)
    now = clock.now()
    since = {"ORPHAN": now, "ON-B": now, "LOCAL-A": None}

    def setup(repos: Any) -> None:
        for charge_point_id, connected_since in since.items():
            repos.charge_points.add(ChargePoint(id=charge_point_id), now)
            if connected_since is not None:
                repos.charge_points.set_connection(
                    charge_point_id, connected=True, now=now, remote_address="x"
                )

    await store.write(setup)
    await connect(b, registry_b, "ON-B")
    await connect(a, registry_a, "LOCAL-A")  # the database lost it (a race)
    clock.advance(1)

    assert await a.reconcile() == 2
    connected = dict(await store.read(lambda repos: repos.charge_points.list_connected()))
    assert set(connected) == {"ON-B", "LOCAL-A"}
    # Another round changes nothing; and a reconnection since the read wins.
    assert await a.reconcile() == 0
    assert not await store.write(
        lambda repos: repos.charge_points.clear_connection(
            "ON-B", connected_since=now - timedelta(seconds=5), now=now
        )
    )


# -------------------------------------------------------------------- events


async def test_events_fan_out_across_nodes(redis: aioredis.Redis, redis_url: str) -> None:
    one, two = RedisEventBus(redis_url), RedisEventBus(redis_url, id_block=3)
    await one.start()
    await two.start()
    try:
        on_one, on_two = one.subscribe(), two.subscribe(types={"status"})
        time = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
        sent = [
            one.publish(Event("status", time, "CP1", {"connector_id": 1, "status": "Charging"})),
            two.publish(Event("connection", time, "CP2", {"state": "connected"})),
            two.publish(Event("status", time, "CP2", {"connector_id": 2, "status": "Faulted"})),
        ]
        received_one = [await on_one.next(timeout=TIMEOUT) for _ in range(3)]
        received_two = [await on_two.next(timeout=TIMEOUT) for _ in range(2)]

        assert sorted(received_one, key=lambda e: e.id if e else 0) == sorted(
            sent, key=lambda e: e.id
        )
        assert received_two == [sent[0], sent[2]] or received_two == [sent[2], sent[0]]
        assert len({event.id for event in sent}) == 3  # unique across the cluster
        assert await on_one.next(timeout=0.2) is None  # own events not delivered twice
        # Ids keep coming from fresh blocks as blocks are used up.
        more = []
        for _ in range(7):
            more.append(two.publish(Event("status", time, "CP2", {})))
            await asyncio.sleep(0.05)
        ids = [e.id for e in more] + [e.id for e in sent]
        assert len(set(ids)) == 10
        assert max(ids) <= int(await redis.get(one._counter) or 0)
        assert [e.id for e in more] == sorted(e.id for e in more)
    finally:
        await one.close()
        await two.close()
