"""One node's connection to Redis: a command client and one subscription.

Everything a node receives arrives on the channels it subscribed to through
:meth:`RedisLink.listen`; one reader task hands each message to that channel's
handler, in order. The reader survives Redis going away: it reconnects with a
bounded back-off and subscribes again (messages published meanwhile are lost,
which callers turn into timeouts). Every Redis command has a socket timeout, so no
wait on Redis is unbounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["Handler", "RedisLink", "namespace_of"]

log = logging.getLogger("kilowatt.cluster")

Handler = Callable[[bytes], None]
"""Called with each message's payload, on the event loop; must not block."""

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
# Connections to Redis per process, and how long a command waits for a free one.
POOL_SIZE = 50
POOL_TIMEOUT = 10.0
SUBSCRIBE_TIMEOUT = 10.0
POLL_INTERVAL = 1.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


def namespace_of(client: aioredis.Redis) -> str:
    """Prefix of every key and channel: ``kilowatt:{db}:``.

    Keys are per database already; pub/sub channels are not (Redis shares them
    across databases), so the database number is part of every name, and two
    clusters on two databases of one Redis never hear each other.
    """
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return f"kilowatt:{db}:"


class RedisLink:
    def __init__(self, url: str, *, client_name: str | None = None) -> None:
        self.url = url
        # A blocking pool: in a burst (a reconnect storm: thousands of presence
        # claims and releases at once) a command waits for a free connection
        # instead of failing with MaxConnectionsError as the default pool does.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            health_check_interval=10,
            client_name=client_name,
        )
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self.namespace = namespace_of(self.client)
        self._pubsub = self.client.pubsub()
        self._handlers: dict[bytes, Handler] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()

    def key(self, *parts: str) -> str:
        return self.namespace + ":".join(parts)

    async def listen(self, handlers: dict[str, Handler]) -> None:
        """Subscribe to ``handlers``' channels; return once Redis confirmed them all.

        Called once, before anything is published to those channels: a message
        published before the subscription is active would be lost.
        """
        assert self._reader is None, "listen() once"
        self._handlers = {name.encode(): handler for name, handler in handlers.items()}
        await self._pubsub.subscribe(*handlers)
        pending = set(self._handlers)
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
            while pending:
                message = await self._pubsub.get_message(timeout=POLL_INTERVAL)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    pending.discard(message["channel"])
                else:
                    self._dispatch(message)
        self.connected.set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._closing:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=POLL_INTERVAL
                )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._closing:
                    return
                if self.connected.is_set():
                    log.warning(
                        "redis subscription lost; reconnecting", extra={"reason": repr(exc)}
                    )
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if not self.connected.is_set():
                log.info("redis subscription restored")
                self.connected.set()
            backoff = BACKOFF_FIRST
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, object]) -> None:
        if message.get("type") != "message":
            return
        channel, data = message.get("channel"), message.get("data")
        handler = self._handlers.get(channel) if isinstance(channel, bytes) else None
        if handler is None or not isinstance(data, bytes):
            return
        try:
            handler(data)
        except Exception:
            log.exception("cluster message handler failed", extra={"channel": channel})

    async def publish(self, channel: str, data: bytes) -> int:
        """Publish; return how many subscribers received it (0: nobody listens)."""
        return await self.client.publish(channel, data)

    async def close(self) -> None:
        self._closing = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError):
            pass
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                await self.client.aclose(close_connection_pool=True)
        except (RedisError, OSError, TimeoutError):
            pass
