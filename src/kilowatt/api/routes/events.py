"""``GET /api/v1/events``: the event bus as Server-Sent Events.

Each event is ``id:`` (the bus's increasing sequence), ``event:`` (its type) and
``data:`` (the event as one line of JSON). The stream opens with a ``: subscribed``
comment, sent once the subscription exists: a client that has read it misses
nothing published afterwards. An idle stream gets a ``: keep-alive`` comment every
``events_keepalive_interval`` seconds so that proxies and clients see it is alive;
a stream that fell behind and lost events (see :mod:`kilowatt.bus.events`) says so
in a comment before the next event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from kilowatt.api.deps import Context, Reader
from kilowatt.api.errors import ApiError
from kilowatt.bus.events import EVENT_TYPES, Event, EventBus

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["events"])

TYPES = ", ".join(sorted(EVENT_TYPES))


def format_event(event: Event) -> bytes:
    data = orjson.dumps(event.to_json())  # one line: orjson never emits newlines
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), data)


async def _stream(
    bus: EventBus,
    *,
    charge_point_id: str | None,
    types: Collection[str] | None,
    queue_size: int,
    keepalive: float,
) -> AsyncIterator[bytes]:
    # Subscribed here, not in the endpoint: the generator's end (client gone, app
    # stopping) is what unsubscribes, so a response never started leaks nothing.
    async with bus.subscribe(
        charge_point_id=charge_point_id, types=types, queue_size=queue_size
    ) as subscription:
        yield b": subscribed\n\n"
        reported = 0
        while True:
            try:
                event = await subscription.next(timeout=keepalive)
            except StopAsyncIteration:
                return
            if subscription.dropped != reported:
                lost = subscription.dropped - reported
                reported = subscription.dropped
                yield b": %d events dropped: this stream fell behind\n\n" % lost
            if event is None:
                yield b": keep-alive\n\n"
            else:
                yield format_event(event)


@router.get(
    "/events",
    summary="Stream events (Server-Sent Events)",
    description="Connections, boots, connector statuses, transactions, meter values and "
    "security events as they happen, as `text/event-stream`. Filter with "
    f"`charge_point_id` and `types` (comma-separated: {TYPES}).",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    ctx: Context,
    token: Reader,
    charge_point_id: Annotated[str | None, Query(min_length=1, max_length=48)] = None,
    types: Annotated[str | None, Query(description=f"Comma-separated: {TYPES}")] = None,
) -> StreamingResponse:
    bus = ctx.events
    if bus is None:
        raise ApiError(404, "not_found", "the event stream is not available in this process")
    wanted: frozenset[str] | None = None
    if types is not None:
        wanted = frozenset(part.strip() for part in types.split(",") if part.strip())
        unknown = sorted(wanted - EVENT_TYPES)
        if unknown or not wanted:
            raise ApiError(
                422,
                "validation_error",
                f"unknown event type(s) {', '.join(unknown) or '(none given)'}; known: {TYPES}",
                {"fields": [{"field": "query.types", "reason": "unknown event type"}]},
            )
    return StreamingResponse(
        _stream(
            bus,
            charge_point_id=charge_point_id,
            types=wanted,
            queue_size=ctx.settings.events_queue_size,
            keepalive=ctx.settings.events_keepalive_interval,
        ),
        media_type="text/event-stream",
        # No caching, and no buffering by reverse proxies (nginx honours this header).
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
