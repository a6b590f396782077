"""Outgoing webhooks: every event POSTed as JSON to each configured URL.

Each URL has its own bounded queue and one worker, so events reach a receiver in
the order they happened and a slow or dead receiver delays only itself. When a
queue is full its oldest event is dropped (counted, and logged once per burst).

A request carries:

* ``Content-Type: application/json``; the body is the event
  (``{"id", "type", "time", "charge_point_id", "data"}``);
* ``X-Kilowatt-Event``: the event type;
* ``X-Kilowatt-Delivery``: an id unique to this event and URL, the same on every
  retry, so a receiver can ignore a delivery it has processed already;
* ``X-Kilowatt-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes with
  ``webhook_secret`` (omitted when no secret is set). Receivers should compare it
  in constant time.

Any answer but 2xx (redirects are not followed), a connection error or a timeout
is retried with exponential backoff: ``webhook_backoff_initial`` seconds, doubling,
at most ``webhook_backoff_max``, ``webhook_max_attempts`` attempts in all; then the
delivery is given up and logged. On shutdown the queues get a grace period to
drain; backoff waits end at once and a delivery that fails then is given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import orjson

from kilowatt import __version__
from kilowatt.bus.events import Event

__all__ = ["WebhookDispatcher", "sign"]

log = logging.getLogger("kilowatt.webhooks")


def sign(secret: bytes, body: bytes) -> str:
    """The X-Kilowatt-Signature value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class _Endpoint:
    url: str
    queue: deque[tuple[str, bytes]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    dropping: bool = False


class WebhookDispatcher:
    """An :class:`kilowatt.services.events.EventSink` that POSTs events to URLs."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        secret: str | None = None,
        queue_size: int = 1000,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 16.0,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._endpoints = [_Endpoint(url) for url in urls]
        self._secret = secret.encode() if secret else None
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._timeout = timeout
        self._client = client
        self._own_client = client is None
        self._closing = asyncio.Event()
        self._started = False

    # ------------------------------------------------------------ statistics

    @property
    def delivered(self) -> int:
        return sum(endpoint.delivered for endpoint in self._endpoints)

    @property
    def failed(self) -> int:
        return sum(endpoint.failed for endpoint in self._endpoints)

    @property
    def dropped(self) -> int:
        return sum(endpoint.dropped for endpoint in self._endpoints)

    # ---------------------------------------------------------------- intake

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every URL; never blocks."""
        if self._closing.is_set() or not self._endpoints:
            return
        body = orjson.dumps(event.to_json())  # once, shared by every URL
        for endpoint in self._endpoints:
            queue = endpoint.queue
            if len(queue) >= self.queue_size:
                queue.popleft()
                endpoint.dropped += 1
                if not endpoint.dropping:
                    endpoint.dropping = True
                    log.warning(
                        "webhook queue full: dropping the oldest events",
                        extra={"url": endpoint.url, "queue_size": self.queue_size},
                    )
            queue.append((event.type, body))
            endpoint.wake.set()

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                headers={"User-Agent": f"kilowatt/{__version__}"},
            )
        loop = asyncio.get_running_loop()
        for endpoint in self._endpoints:
            endpoint.worker = loop.create_task(self._work(endpoint))

    async def close(self, grace: float = 5.0) -> None:
        """Give the queues ``grace`` seconds to drain, then stop and close the client."""
        self._closing.set()
        workers = []
        for endpoint in self._endpoints:
            endpoint.wake.set()
            if endpoint.worker is not None:
                workers.append(endpoint.worker)
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for endpoint in self._endpoints:
            endpoint.worker = None
            if endpoint.queue:
                log.warning(
                    "webhook events not delivered at shutdown",
                    extra={"url": endpoint.url, "events": len(endpoint.queue)},
                )
                endpoint.queue.clear()
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None

    # -------------------------------------------------------------- delivery

    async def _work(self, endpoint: _Endpoint) -> None:
        while True:
            while not endpoint.queue:
                if self._closing.is_set():
                    return
                endpoint.dropping = False
                endpoint.wake.clear()
                await endpoint.wake.wait()
            event_type, body = endpoint.queue.popleft()
            try:
                await self._deliver(endpoint, event_type, body)
            except Exception:
                # Never let one event stop the worker of its URL.
                endpoint.failed += 1
                log.exception("webhook delivery failed", extra={"url": endpoint.url})

    async def _deliver(self, endpoint: _Endpoint, event_type: str, body: bytes) -> None:
        client = self._client
        assert client is not None
        delivery = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-Kilowatt-Event": event_type,
            "X-Kilowatt-Delivery": delivery,
        }
        if self._secret is not None:
            headers["X-Kilowatt-Signature"] = sign(self._secret, body)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await client.post(endpoint.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    endpoint.delivered += 1
                    return
                reason = f"HTTP {response.status_code}"
            facts = {
                "url": endpoint.url,
                "event_type": event_type,
                "delivery": delivery,
                "attempt": attempt,
                "reason": reason,
            }
            if attempt >= self.max_attempts or self._closing.is_set():
                endpoint.failed += 1
                log.warning("webhook delivery failed; giving up", extra=facts)
                return
            delay = min(self.backoff_initial * 2 ** (attempt - 1), self.backoff_max)
            log.info("webhook delivery failed; retrying", extra={**facts, "retry_in": delay})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    # Shutting down ends the wait at once (one last attempt follows).
                    await self._closing.wait()
