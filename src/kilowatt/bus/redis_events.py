"""The event bus of a cluster: every node's events reach every node's subscribers.

The interface is :class:`kilowatt.bus.events.EventBus`'s. :meth:`RedisEventBus.publish`
stamps the event, hands it to this node's subscribers at once (through a
:class:`~kilowatt.bus.events.LocalEventBus`, which does the filtering and the
per-subscriber dropping) and queues it for a background sender that publishes it
on the cluster's events channel. Each node's listener feeds what other nodes
published to its local subscribers; its own events, coming back, are skipped.
``publish`` never blocks and never fails: while Redis is out of reach the
outgoing queue (``outbox_size``) keeps the newest events and counts the dropped.

Event ids are unique across the cluster: each node takes blocks of ids from a
Redis counter (``INCRBY``) and stamps from its current block, fetching the next
one before it runs out, so ``publish`` never waits for Redis. They increase by one
per event of one node; a stream interleaves the nodes' events, so its ids grow by
blocks rather than strictly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
from redis.exceptions import RedisError

from kilowatt.bus.events import Event, LocalEventBus, Subscription
from kilowatt.cluster.link import RedisLink

__all__ = ["RedisEventBus"]

log = logging.getLogger("kilowatt.events")

ID_BLOCK = 10_000
SEND_BATCH = 200
BACKOFF_MAX = 5.0
CLOSE_FLUSH_TIMEOUT = 2.0


def encode_event(origin: str, event: Event) -> bytes:
    return orjson.dumps(
        {
            "origin": origin,
            "id": event.id,
            "type": event.type,
            "time": event.time.isoformat(),
            "charge_point_id": event.charge_point_id,
            "data": event.data,
        }
    )


def decode_event(raw: bytes) -> tuple[str, Event]:
    message: dict[str, Any] = orjson.loads(raw)
    event = Event(
        type=str(message["type"]),
        time=datetime.fromisoformat(message["time"]),
        charge_point_id=message.get("charge_point_id"),
        data=message.get("data") or {},
        id=int(message["id"]),
    )
    return str(message.get("origin", "")), event


class RedisEventBus:
    def __init__(
        self,
        redis_url: str,
        *,
        queue_size: int = 1000,
        outbox_size: int = 10_000,
        id_block: int = ID_BLOCK,
    ) -> None:
        self.local = LocalEventBus(queue_size=queue_size)
        self._link = RedisLink(redis_url, client_name="kilowatt-events")
        self._channel = self._link.key("events")
        self._counter = self._link.key("events", "id")
        # Tells this bus's own events, coming back from Redis, from other nodes'.
        self.origin = uuid.uuid4().hex
        self._id_block = id_block
        self._next_id = 1
        self._block_end = 0  # ids up to here are ours
        self._next_block: tuple[int, int] | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._outbox: deque[bytes] = deque()
        self._outbox_size = outbox_size
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()  # set while the outbox is empty
        self._drained.set()
        self._sender: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.published = 0
        self.received = 0
        self.dropped = 0  # events that never left this node (queue full)

    @property
    def subscribers(self) -> int:
        return self.local.subscribers

    @property
    def listened(self) -> bool:
        return True  # other nodes' subscribers are not known here

    async def start(self) -> None:
        """Take the first block of ids and start listening and sending."""
        self._use_block(await self._fetch_block())
        await self._link.listen({self._channel: self._on_message})
        self._sender = asyncio.get_running_loop().create_task(self._send())
        self._started = True

    # ------------------------------------------------------------ publish

    def publish(self, event: Event) -> Event:
        stamped = replace(event, id=self._take_id())
        if self._closed:
            return stamped
        self.published += 1
        self.local.deliver(stamped)
        if len(self._outbox) >= self._outbox_size:
            self._outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("events not sent to the cluster", extra={"dropped": self.dropped})
        self._outbox.append(encode_event(self.origin, stamped))
        self._drained.clear()
        self._wakeup.set()
        return stamped

    def _take_id(self) -> int:
        if self._next_id > self._block_end and self._next_block is not None:
            self._use_block(self._next_block)
            self._next_block = None
        event_id = self._next_id
        self._next_id += 1
        remaining = self._block_end - self._next_id
        if (
            self._started
            and remaining < self._id_block // 2
            and self._next_block is None
            and self._fetching is None
        ):
            self._fetching = asyncio.get_running_loop().create_task(self._prefetch())
        # Past the block (Redis out of reach for a long burst): ids go on counting;
        # they may then repeat another node's, which is logged once per block.
        if event_id == self._block_end + 1 and self._started:
            log.warning("event ids ran past their block: Redis is not answering")
        return event_id

    def _use_block(self, block: tuple[int, int]) -> None:
        self._next_id, self._block_end = block

    async def _fetch_block(self) -> tuple[int, int]:
        end = await self._link.client.incrby(self._counter, self._id_block)
        return end - self._id_block + 1, end

    async def _prefetch(self) -> None:
        try:
            self._next_block = await self._fetch_block()
        except (RedisError, OSError) as exc:
            log.warning("could not reserve event ids", extra={"reason": repr(exc)})
        finally:
            self._fetching = None

    async def _send(self) -> None:
        backoff = 0.1
        client = self._link.client
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(SEND_BATCH, len(self._outbox)))]
                try:
                    pipe = client.pipeline(transaction=False)
                    for message in batch:
                        pipe.publish(self._channel, message)
                    await pipe.execute()
                except (RedisError, OSError) as exc:
                    # Back in front, oldest first; the queue's bound still holds.
                    room = self._outbox_size - len(self._outbox)
                    kept = batch[-room:] if room > 0 else []
                    self.dropped += len(batch) - len(kept)
                    self._outbox.extendleft(reversed(kept))
                    log.warning("could not send events to the cluster", extra={"reason": repr(exc)})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    backoff = 0.1
            self._drained.set()

    def _on_message(self, raw: bytes) -> None:
        origin, event = decode_event(raw)
        if origin == self.origin or self._closed:
            return
        self.received += 1
        self.local.deliver(event)

    # -------------------------------------------------------- subscribers

    def subscribe(
        self,
        *,
        charge_point_id: str | None = None,
        types: Collection[str] | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        return self.local.subscribe(
            charge_point_id=charge_point_id, types=types, queue_size=queue_size
        )

    async def close(self) -> None:
        """End every subscription; send what is queued (briefly); stop."""
        if self._closed:
            return
        self._closed = True
        await self.local.close()
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT):
                    await self._drained.wait()
            except TimeoutError:
                log.warning("events not sent to the cluster", extra={"dropped": len(self._outbox)})
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        fetching = self._fetching
        if fetching is not None:
            fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)
        await self._link.close()
