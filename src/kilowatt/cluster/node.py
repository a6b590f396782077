"""One node of a cluster: presence, cross-node commands, duplicate closing, reconciliation.

:class:`ClusterNode` owns this process's Redis link and everything built on it:

* its channel (``{ns}to:{node_id}``): call requests from other nodes, replies to
  ours, and "close your connection" control messages;
* :meth:`ClusterNode.hooks` wraps the charge point service's connection hooks: a
  connection claims its charge point's presence key *before* the database says it
  is connected, and when the claim took the charge point from another node, that
  node is told to close its older connection (the gateway already replaces an
  older connection on this node). A disconnection releases the key only if it is
  still this connection's, and leaves the database alone when another node holds
  the charge point by then (its connection state is that node's to write);
* every ``presence_ttl / 3`` seconds: the node's heartbeat and every claim are
  renewed; a claim found taken by another node closes the local connection;
* every ``presence_ttl`` seconds, connection state is reconciled: this node marks
  its own connections connected where the database lost that (a concurrent write
  of another node), and one node per round (a Redis lock) marks disconnected the
  charge points the database calls connected although no node holds them (their
  node died). A row changes only if its ``connected_since`` is still the one read
  (one conditional UPDATE): a charge point that reconnected meanwhile is left alone.
  Nothing is reset at start-up: a node only ever clears state nobody owns.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import socket
from collections import Counter
from datetime import datetime
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from kilowatt.bus.redis import RedisCommandBus, node_channel
from kilowatt.bus.redis_events import RedisEventBus
from kilowatt.clock import Clock
from kilowatt.cluster import ClusterUnavailable
from kilowatt.cluster.link import RedisLink
from kilowatt.cluster.presence import Presence
from kilowatt.gateway.registry import ConnectionRegistry
from kilowatt.store.base import Repositories, Store

__all__ = ["ClusterNode", "PresenceHooks", "default_node_id"]

log = logging.getLogger("kilowatt.cluster")

CLOSE_NORMAL = 1000


def default_node_id() -> str:
    """``HOST-PID-RANDOM``: unique per process, readable in logs."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:60] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class StateHooks(Protocol):
    """The charge point service's side of the connection hooks."""

    async def connected(
        self, charge_point_id: str, *, remote_address: str, security_profile: int
    ) -> None: ...

    async def disconnected(self, charge_point_id: str, *, superseded: bool = False) -> None: ...


class ClusterNode:
    def __init__(
        self,
        *,
        redis_url: str,
        node_id: str,
        presence_ttl: float,
        call_timeout: float,
        registry: ConnectionRegistry,
        store: Store,
        clock: Clock,
        events: RedisEventBus | None = None,
        address: str = "",
    ) -> None:
        self.node_id = node_id
        self.presence_ttl = presence_ttl
        self.link = RedisLink(redis_url, client_name=f"kilowatt-{node_id}")
        self.presence = Presence(self.link, node_id, presence_ttl)
        self.commands = RedisCommandBus(
            registry, self.link, self.presence, default_timeout=call_timeout
        )
        self.events = events
        self._registry = registry
        self._store = store
        self._clock = clock
        self._address = address
        self._started_at = clock.now()
        self._channel = node_channel(self.link, node_id)
        # Unique per process: a restarted worker keeps its node id, not its tokens.
        salt = secrets.token_hex(2)
        self._tokens = (f"{salt}.{n}" for n in itertools.count(1))
        # The claim of each charge point connected here: its connection's token and
        # remote address; and how many connections of each are being set up.
        self.held: dict[str, str] = {}
        self._remote: dict[str, str] = {}
        self._connecting: Counter[str] = Counter()
        self._background: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.reconciled = 0  # rows fixed by reconciliation, for logs and tests
        self._stopped = False

    def hooks(self, inner: StateHooks) -> PresenceHooks:
        return PresenceHooks(self, inner)

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        try:
            await self.link.listen({self._channel: self._on_message})
            await self.presence.beat(self._info())
            if self.events is not None:
                await self.events.start()
        except (RedisError, OSError, TimeoutError) as exc:
            if self.events is not None:
                await self.events.close()
            await self.link.close()
            raise ClusterUnavailable(
                f"cannot reach the cluster's Redis at {_redacted(self.link.url)}: {exc}"
            ) from exc
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._every(self.presence_ttl / 3, self.renew)),
            loop.create_task(self._every(self.presence_ttl, self.reconcile)),
        ]
        log.info(
            "cluster node started",
            extra={
                "node": self.node_id,
                "redis": _redacted(self.link.url),
                "presence_ttl": self.presence_ttl,
            },
        )

    async def stop(self) -> None:
        """After the gateway stopped (its disconnections released their claims)."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        await self.commands.close()
        if self.events is not None:
            await self.events.close()
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)
        try:
            await self.presence.leave()
        except (RedisError, OSError) as exc:
            log.warning("could not leave the cluster cleanly", extra={"reason": repr(exc)})
        await self.link.close()
        log.info("cluster node stopped", extra={"node": self.node_id})

    def _info(self) -> bytes:
        return orjson.dumps(
            {
                "node": self.node_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "address": self._address,
                "started_at": self._started_at.isoformat(),
                "charge_points": len(self.held),
            }
        )

    async def _every(self, interval: float, job: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except (RedisError, OSError) as exc:
                log.warning("cluster upkeep failed; will retry", extra={"reason": repr(exc)})
            except Exception:
                log.exception("cluster upkeep failed; will retry")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ messages

    def _on_message(self, raw: bytes) -> None:
        message: dict[str, Any] = orjson.loads(raw)
        kind = message.get("t")
        if kind == "call":
            self.commands.handle_request(message)
        elif kind == "reply":
            self.commands.handle_reply(message)
        elif kind == "close":
            charge_point_id = str(message.get("cp"))
            # Only the connection the other node replaced: not a newer one of ours.
            if self.held.get(charge_point_id) == message.get("token"):
                self._close_local(
                    charge_point_id, f"replaced by a new connection on node {message.get('by')}"
                )

    def _close_local(self, charge_point_id: str, reason: str) -> None:
        connection = self._registry.get(charge_point_id)
        if connection is None:
            return
        log.info(
            "closing a connection another node took over",
            extra={"charge_point": charge_point_id, "node": self.node_id, "reason": reason},
        )
        self._spawn(connection.close(CLOSE_NORMAL, reason[:120]))

    # ------------------------------------------------------------ presence

    async def claim(self, charge_point_id: str, remote_address: str) -> None:
        token = next(self._tokens)
        self.held[charge_point_id] = token
        self._remote[charge_point_id] = remote_address
        try:
            previous = await self.presence.claim(charge_point_id, token)
        except (RedisError, OSError) as exc:
            # Served all the same; the next renewal writes the claim.
            log.warning(
                "could not record which node holds the charge point",
                extra={"charge_point": charge_point_id, "reason": repr(exc)},
            )
            return
        previous_node = previous.node_id if previous is not None else None
        log.info(
            "charge point held",
            extra={
                "charge_point": charge_point_id,
                "node": self.node_id,
                "previous": previous_node,
            },
        )
        if previous is not None and previous.node_id != self.node_id:
            message = orjson.dumps(
                {"t": "close", "cp": charge_point_id, "token": previous.token, "by": self.node_id}
            )
            try:
                await self.link.publish(node_channel(self.link, previous.node_id), message)
            except (RedisError, OSError) as exc:
                # The other node finds out at its next renewal.
                log.warning(
                    "could not tell the previous node to close its connection",
                    extra={"charge_point": charge_point_id, "reason": repr(exc)},
                )

    async def release(self, charge_point_id: str) -> bool:
        """Forget this node's claim; False when another node holds the charge point."""
        token = self.held.pop(charge_point_id, None)
        self._remote.pop(charge_point_id, None)
        if token is None:
            return True
        try:
            return await self.presence.release(charge_point_id, token)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not release the charge point's presence (it expires)",
                extra={"charge_point": charge_point_id, "reason": repr(exc)},
            )
            return True

    async def renew(self) -> None:
        await self.presence.beat(self._info())
        held = {cp: token for cp, token in self.held.items() if cp not in self._connecting}
        for charge_point_id in [cp for cp in held if self._registry.get(cp) is None]:
            # A claim without a connection (its set-up failed): nothing to keep.
            del held[charge_point_id]
            await self.release(charge_point_id)
        for charge_point_id in await self.presence.renew(held):
            if self.held.get(charge_point_id) != held[charge_point_id]:
                continue  # a newer connection of ours claimed it meanwhile
            if self._registry.get(charge_point_id) is None:
                self.held.pop(charge_point_id, None)
            else:
                self._close_local(charge_point_id, "held by another node")

    # ------------------------------------------------------- reconciliation

    async def reconcile(self) -> int:
        """One round (see the module docstring); return how many rows changed."""
        rows = await self._store.read(lambda repos: repos.charge_points.list_connected())
        in_database = dict(rows)
        local = {
            cp: self._remote.get(cp)
            for cp in self.held
            if cp not in self._connecting and self._registry.get(cp) is not None
        }
        changed = 0
        missing = [cp for cp in local if cp not in in_database]
        if missing:
            now = self._clock.now()

            def mark_connected(repos: Repositories) -> None:
                for cp in missing:
                    repos.charge_points.set_connection(
                        cp, connected=True, now=now, remote_address=local[cp]
                    )

            await self._store.write(mark_connected)
            changed += len(missing)
        orphans = [cp for cp in in_database if cp not in local]
        if orphans and await self._lead():
            holders = await self.presence.holders(orphans)
            gone = [
                (cp, in_database[cp])
                for cp, holder in zip(orphans, holders, strict=True)
                if holder is None
            ]
            if gone:
                changed += await self._store.write(_mark_gone(gone, self._clock.now()))
        if changed:
            self.reconciled += changed
            log.info(
                "connection state reconciled with the cluster",
                extra={"node": self.node_id, "changed": changed},
            )
        return changed

    async def _lead(self) -> bool:
        """Whether this node clears orphans this round (one node per round)."""
        acquired = await self.link.client.set(
            self.link.key("reconcile"),
            self.node_id,
            nx=True,
            px=max(1, int(self.presence_ttl * 900)),
        )
        return bool(acquired)


def _mark_gone(gone: list[tuple[str, datetime | None]], now: datetime) -> Any:
    def work(repos: Repositories) -> int:
        cleared = 0
        for charge_point_id, since in gone:
            # Only if still connected since then: a reconnection meanwhile wins.
            if repos.charge_points.clear_connection(
                charge_point_id, connected_since=since, now=now
            ):
                cleared += 1
        return cleared

    return work


class PresenceHooks:
    """The gateway's connection hooks in a cluster (see the module docstring)."""

    def __init__(self, node: ClusterNode, inner: StateHooks) -> None:
        self._node = node
        self._inner = inner

    async def connected(
        self, charge_point_id: str, *, remote_address: str, security_profile: int
    ) -> None:
        node = self._node
        node._connecting[charge_point_id] += 1
        try:
            await node.claim(charge_point_id, remote_address)
            try:
                await self._inner.connected(
                    charge_point_id,
                    remote_address=remote_address,
                    security_profile=security_profile,
                )
            except BaseException:
                # The gateway drops the connection: the claim goes with it, unless an
                # older connection of this node still serves the charge point.
                if charge_point_id in node.held and node._registry.get(charge_point_id) is None:
                    await asyncio.shield(node.release(charge_point_id))
                raise
        finally:
            node._connecting[charge_point_id] -= 1
            if node._connecting[charge_point_id] <= 0:
                del node._connecting[charge_point_id]

    async def disconnected(self, charge_point_id: str) -> None:
        node = self._node
        if charge_point_id in node._connecting:
            # A newer connection of this node is being set up: the claim is its.
            await self._inner.disconnected(charge_point_id, superseded=True)
            return
        owned = await node.release(charge_point_id)
        await self._inner.disconnected(charge_point_id, superseded=not owned)


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)
