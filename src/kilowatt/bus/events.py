"""The event bus: what happened in the Central System, for whoever listens.

``publish(event)`` never blocks and never fails because of a listener: every
subscriber has its own bounded queue, and a subscriber that does not keep up loses
its oldest events (counted in :attr:`Subscription.dropped`) instead of slowing the
charge point whose message produced them.

:class:`LocalEventBus` delivers to subscribers in this process. The interface is the
one a Redis-backed bus keeps for a cluster: ``publish`` stamps the event and hands
it to a background sender (still never blocking), each node holds one Redis
subscription and feeds what arrives to :meth:`LocalEventBus.deliver`, which does the
per-subscriber fan-out, filtering and dropping exactly as here.

Event ids are a per-bus sequence, increasing by one with every published event; a
subscriber that filters sees gaps. There is no replay: a subscriber sees what is
published while it is subscribed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from kilowatt.clock import format_datetime

__all__ = ["EVENT_TYPES", "Event", "EventBus", "LocalEventBus", "Subscription"]

EVENT_TYPES = frozenset(
    {
        "connection",
        "boot",
        "status",
        "transaction.started",
        "transaction.stopped",
        "meter_values",
        "security_event",
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened; ``data`` holds JSON-ready values only."""

    type: str
    time: datetime
    charge_point_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    id: int = 0  # set by the bus when published

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "time": format_datetime(self.time),
            "charge_point_id": self.charge_point_id,
            "data": self.data,
        }


class Subscription(Protocol):
    """The events one subscriber receives, in publication order."""

    dropped: int

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds with none.

        Raises StopAsyncIteration once the subscription or the bus is closed.
        """
        ...

    def close(self) -> None: ...

    async def __aenter__(self) -> Subscription: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class EventBus(Protocol):
    def publish(self, event: Event) -> Event:
        """Stamp ``event`` with its id, hand it to every subscriber; return it stamped.

        Never blocks and never raises because of a subscriber.
        """
        ...

    @property
    def listened(self) -> bool:
        """Whether an event published now could reach anybody (False: building it can
        be skipped; events are not kept for later subscribers)."""
        ...

    def subscribe(
        self,
        *,
        charge_point_id: str | None = None,
        types: Collection[str] | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Receive the events published from now on that match the filters."""
        ...

    async def close(self) -> None:
        """End every subscription; later events are discarded."""
        ...


class _LocalSubscription:
    __slots__ = (
        "_bus",
        "_closed",
        "_queue",
        "_waiter",
        "charge_point_id",
        "dropped",
        "queue_size",
        "types",
    )

    def __init__(
        self,
        bus: LocalEventBus,
        charge_point_id: str | None,
        types: frozenset[str] | None,
        queue_size: int,
    ) -> None:
        self._bus = bus
        self.charge_point_id = charge_point_id
        self.types = types
        self.queue_size = queue_size
        self._queue: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        if self.charge_point_id is not None and event.charge_point_id != self.charge_point_id:
            return
        if self.types is not None and event.type not in self.types:
            return
        queue = self._queue
        if len(queue) >= self.queue_size:
            # The oldest goes: a slow reader still gets the newest state, and the
            # publisher (a charge point's message) never waits for it.
            queue.popleft()
            self.dropped += 1
        queue.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self._closed = True
        self._wake()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = await self.next()
        assert event is not None  # no timeout: an event or the end
        return event

    async def next(self, timeout: float | None = None) -> Event | None:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                if timeout is None:
                    await waiter
                else:
                    try:
                        async with asyncio.timeout(timeout):
                            await waiter
                    except TimeoutError:
                        return None
            finally:
                self._waiter = None
        return self._queue.popleft()

    def close(self) -> None:
        if not self._closed:
            self._bus._remove(self)
            self._end()

    async def __aenter__(self) -> _LocalSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class LocalEventBus:
    """Publish/subscribe within one process (see the module docstring)."""

    def __init__(self, *, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscribers: list[_LocalSubscription] = []
        self._ids = itertools.count(1)
        self._closed = False
        self.published = 0

    def publish(self, event: Event) -> Event:
        stamped = replace(event, id=next(self._ids))
        if not self._closed:
            self.published += 1
            self.deliver(stamped)
        return stamped

    @property
    def listened(self) -> bool:
        return bool(self._subscribers)

    def deliver(self, event: Event) -> None:
        """Hand an already stamped event to the local subscribers."""
        for subscriber in self._subscribers:
            subscriber._offer(event)

    def subscribe(
        self,
        *,
        charge_point_id: str | None = None,
        types: Collection[str] | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        subscription = _LocalSubscription(
            self,
            charge_point_id,
            frozenset(types) if types is not None else None,
            queue_size or self.queue_size,
        )
        if self._closed:
            subscription._end()
        else:
            # Copy on write: deliver() may be iterating over the current list.
            self._subscribers = [*self._subscribers, subscription]
        return subscription

    def _remove(self, subscription: _LocalSubscription) -> None:
        self._subscribers = [s for s in self._subscribers if s is not subscription]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def close(self) -> None:
        self._closed = True
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber._end()
