"""Which node holds which charge point's socket: Redis keys with a TTL.

``{ns}cp:{charge_point_id}`` = ``"{node_id} {token}"``, expiring after
``presence_ttl`` unless renewed; the token tells one connection of a node from
the next, so that a late "close your connection" or release never hits a newer
connection. ``{ns}node:{node_id}`` is the node's own heartbeat, with the same TTL.

* :meth:`Presence.claim` takes a charge point over unconditionally (the newest
  connection wins) and returns the previous holder, atomically (SET … GET).
* :meth:`Presence.release` deletes the key only while it is still ours.
* :meth:`Presence.renew` extends every key of this node in one script per batch,
  puts back keys that expired while we still hold the socket (Redis restarted or
  was out of reach for longer than the TTL), and reports the keys another node has
  taken meanwhile: those local connections are stale and get closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kilowatt.cluster.link import RedisLink

__all__ = ["Holder", "Presence"]

RENEW_BATCH = 500

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
    local value = redis.call('GET', key)
    if value == ARGV[i + 1] then
        redis.call('PEXPIRE', key, ARGV[1])
    elseif not value then
        redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
    else
        lost[#lost + 1] = i
    end
end
return lost
"""


@dataclass(frozen=True, slots=True)
class Holder:
    """One connection of one node."""

    node_id: str
    token: str

    def encode(self) -> str:
        return f"{self.node_id} {self.token}"

    @classmethod
    def decode(cls, value: bytes | str | None) -> Holder | None:
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        node_id, _, token = text.partition(" ")
        return cls(node_id, token)


class Presence:
    def __init__(self, link: RedisLink, node_id: str, ttl: float) -> None:
        self._link = link
        self.node_id = node_id
        self.ttl_ms = max(1, int(ttl * 1000))
        client = link.client
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)

    def key(self, charge_point_id: str) -> str:
        return self._link.key("cp", charge_point_id)

    def node_key(self, node_id: str) -> str:
        return self._link.key("node", node_id)

    async def claim(self, charge_point_id: str, token: str) -> Holder | None:
        """Make this node's connection ``token`` the holder; return the previous one."""
        previous = await self._link.client.set(
            self.key(charge_point_id),
            Holder(self.node_id, token).encode(),
            px=self.ttl_ms,
            get=True,
        )
        if previous is None or isinstance(previous, bool):
            return None
        return Holder.decode(previous)

    async def release(self, charge_point_id: str, token: str) -> bool:
        """Forget the claim of connection ``token``; False when another holds it now."""
        deleted = await self._release(
            keys=[self.key(charge_point_id)], args=[Holder(self.node_id, token).encode()]
        )
        return bool(deleted)

    async def renew(self, held: Mapping[str, str]) -> list[str]:
        """Extend the claims in ``held`` (charge point → token); return those lost."""
        lost: list[str] = []
        items = list(held.items())
        for start in range(0, len(items), RENEW_BATCH):
            batch = items[start : start + RENEW_BATCH]
            keys = [self.key(charge_point_id) for charge_point_id, _ in batch]
            values = [Holder(self.node_id, token).encode() for _, token in batch]
            indexes = await self._renew(keys=keys, args=[self.ttl_ms, *values])
            lost.extend(batch[int(index) - 1][0] for index in indexes or ())
        return lost

    async def holder(self, charge_point_id: str) -> Holder | None:
        return Holder.decode(await self._link.client.get(self.key(charge_point_id)))

    async def holders(self, charge_point_ids: Sequence[str]) -> list[Holder | None]:
        if not charge_point_ids:
            return []
        values = await self._link.client.mget([self.key(cp) for cp in charge_point_ids])
        return [Holder.decode(value) for value in values]

    async def beat(self, info: bytes) -> None:
        """Say this node is alive, for one more TTL."""
        await self._link.client.set(self.node_key(self.node_id), info, px=self.ttl_ms)

    async def leave(self) -> None:
        await self._link.client.delete(self.node_key(self.node_id))
