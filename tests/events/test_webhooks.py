"""Webhooks: signed POSTs to a receiver on 127.0.0.1, retries with backoff, bounds."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from kilowatt.bus.events import Event
from kilowatt.services.webhooks import WebhookDispatcher, sign
from tests.events.conftest import Receiver, StartApp, charge_point

SECRET = "s3cret"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _event(n: int = 0, type: str = "status") -> Event:
    return Event(type, NOW, "CP1", {"n": n}, id=n + 1)


def _expected_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def _free_port() -> int:
    # Bound then closed: nothing listens there for the length of the test.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_app_posts_signed_events(start_app: StartApp) -> None:
    async with Receiver() as receiver:
        app = await start_app(webhook_urls=[receiver.url], webhook_secret=SECRET)
        async with charge_point(app) as cp:
            await cp.boot()
        requests = await receiver.wait_for(3)  # connected, boot, disconnected

    assert [r.headers["x-kilowatt-event"] for r in requests[:3]] == [
        "connection",
        "boot",
        "connection",
    ]
    deliveries = set()
    for request in requests[:3]:
        assert (request.method, request.target) == ("POST", "/hook")
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-kilowatt-signature"] == _expected_signature(request.body)
        uuid.UUID(request.headers["x-kilowatt-delivery"])
        deliveries.add(request.headers["x-kilowatt-delivery"])
        body = orjson.loads(request.body)
        assert set(body) == {"id", "type", "time", "charge_point_id", "data"}
        assert body["type"] == request.headers["x-kilowatt-event"]
        assert body["charge_point_id"] == "CP1"
    assert len(deliveries) == 3
    boot = orjson.loads(requests[1].body)
    assert (boot["data"]["registration"], boot["data"]["vendor"]) == ("Accepted", "Acme")


async def test_a_receiver_failing_twice_gets_the_event_on_the_third_attempt() -> None:
    async with Receiver(statuses=[500, 503, 200]) as receiver:
        dispatcher = WebhookDispatcher(
            [receiver.url], secret=SECRET, backoff_initial=0.05, backoff_max=1.0
        )
        await dispatcher.start()
        try:
            dispatcher.publish(_event(1))
            requests = await receiver.wait_for(3)
            async with asyncio.timeout(5):
                while dispatcher.delivered < 1:
                    await asyncio.sleep(0.01)
        finally:
            await dispatcher.close()
    assert [r.status for r in requests] == [500, 503, 200]
    assert len({r.body for r in requests}) == 1
    assert len({r.headers["x-kilowatt-delivery"] for r in requests}) == 1  # one delivery
    assert all(r.headers["x-kilowatt-signature"] == _expected_signature(r.body) for r in requests)
    first_wait = requests[1].at - requests[0].at
    second_wait = requests[2].at - requests[1].at
    assert first_wait >= 0.045
    assert second_wait >= 0.095  # doubled
    assert (dispatcher.delivered, dispatcher.failed) == (1, 0)


async def test_a_delivery_is_given_up_after_the_last_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Receiver(statuses=[500, 500, 500]) as receiver:
        dispatcher = WebhookDispatcher(
            [receiver.url], max_attempts=3, backoff_initial=0.01, backoff_max=0.02
        )
        await dispatcher.start()
        try:
            with caplog.at_level("INFO", logger="kilowatt.webhooks"):
                dispatcher.publish(_event(1))
                dispatcher.publish(_event(2))
                async with asyncio.timeout(5):
                    while dispatcher.failed + dispatcher.delivered < 2:
                        await asyncio.sleep(0.01)
        finally:
            await dispatcher.close()
    # Three attempts for the first event; the second one follows, in order.
    assert [orjson.loads(r.body)["data"]["n"] for r in receiver.requests[:4]] == [1, 1, 1, 2]
    assert dispatcher.failed == 1 and dispatcher.delivered == 1
    assert "X-Kilowatt-Signature".lower() not in receiver.requests[0].headers  # no secret
    giving_up = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert len(giving_up) == 1 and giving_up[0].levelname == "WARNING"


async def test_events_reach_every_url_in_order() -> None:
    async with Receiver() as first, Receiver() as second:
        dispatcher = WebhookDispatcher([first.url, second.url], secret=SECRET)
        await dispatcher.start()
        try:
            for n in range(20):
                dispatcher.publish(_event(n))
            await first.wait_for(20)
            await second.wait_for(20)
        finally:
            await dispatcher.close()
    for receiver in (first, second):
        assert [orjson.loads(r.body)["data"]["n"] for r in receiver.requests] == list(range(20))
    # Each URL gets its own delivery ids.
    ids = {r.headers["x-kilowatt-delivery"] for r in first.requests + second.requests}
    assert len(ids) == 40


async def test_a_full_queue_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    async with Receiver() as receiver:
        dispatcher = WebhookDispatcher([receiver.url], queue_size=5)
        with caplog.at_level("WARNING", logger="kilowatt.webhooks"):
            for n in range(12):  # not started yet: nothing is sent, the queue fills
                dispatcher.publish(_event(n))
        assert dispatcher.dropped == 7
        assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
        await dispatcher.start()
        try:
            requests = await receiver.wait_for(5)
        finally:
            await dispatcher.close()
    assert [orjson.loads(r.body)["data"]["n"] for r in requests] == [7, 8, 9, 10, 11]


async def test_close_does_not_wait_out_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{_free_port()}/hook"  # connection refused
    dispatcher = WebhookDispatcher([url], backoff_initial=30, backoff_max=30)
    await dispatcher.start()
    with caplog.at_level("INFO", logger="kilowatt.webhooks"):
        dispatcher.publish(_event(1))
        async with asyncio.timeout(5):
            while "retrying" not in caplog.text:  # the first attempt failed: 30 s to wait
                await asyncio.sleep(0.01)
    started = time.perf_counter()
    await dispatcher.close(grace=5)
    assert time.perf_counter() - started < 1.0
    assert dispatcher.failed == 1
    dispatcher.publish(_event(2))  # after close: ignored, nothing raised


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"type":"boot"}'
    assert sign(b"key", body) == ("sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest())
