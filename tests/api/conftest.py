"""The real FastAPI application of ``create_app``, on each engine, and clients for it.

The API is exercised in-process through ``httpx.ASGITransport`` (no socket); the
database is real (SQLite file or the shared PostgreSQL of tests/conftest.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kilowatt.app import Application, create_app, prepare_database
from kilowatt.clock import FakeClock
from kilowatt.config import load_settings
from kilowatt.services.api_tokens import Role

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
BASE_URL = "http://kilowatt.test"

Client = Callable[[str | None], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def kilowatt(engine_url: str) -> AsyncIterator[Application]:
    """The composed application with a migrated store; nothing listens."""
    app = create_app(
        load_settings(database_url=engine_url, port=0, ping_interval=0, log_level="warning"),
        clock=FakeClock(NOW),
    )
    try:
        await prepare_database(app.services, migrate=True)
        yield app
    finally:
        await app.services.store.close()


@pytest.fixture
def client(kilowatt: Application) -> Client:
    """``async with client(secret) as http``: an API client sending that bearer token."""
    api = kilowatt.api
    assert api is not None

    @contextlib.asynccontextmanager
    async def open_client(token: str | None) -> AsyncIterator[httpx.AsyncClient]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url=BASE_URL, headers=headers
        ) as http:
            yield http

    return open_client


@pytest.fixture
async def admin_token(kilowatt: Application) -> str:
    _, secret = await kilowatt.services.tokens.create("operator", Role.ADMIN)
    return secret


@pytest.fixture
async def read_token(kilowatt: Application) -> str:
    _, secret = await kilowatt.services.tokens.create("dashboard", Role.READ)
    return secret


@pytest.fixture
async def admin(client: Client, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client(admin_token) as http:
        yield http


@pytest.fixture
async def reader(client: Client, read_token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client(read_token) as http:
        yield http


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the API's one error shape with this status and code; return it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    return error


def error_fields(error: dict[str, Any]) -> list[str]:
    """The fields a validation error names (``body.status``, ``query.limit`` ...)."""
    return [field["field"] for field in error["details"]["fields"]]
