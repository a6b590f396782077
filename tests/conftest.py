"""Session-wide fixtures: real PostgreSQL and Redis servers, and stores on both engines.

PostgreSQL starts once per session (see :mod:`tests.servers`); the tests share one
database, migrated once and truncated before every test that uses it. Without the
server binaries those tests are skipped with an install hint, except under CI (env
``CI`` set), where a missing server is a failure.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest

from kilowatt.store.sql import tables
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import upgrade
from tests.servers import (
    POSTGRES_ENV,
    ServerUnavailable,
    asyncpg_dsn,
    start_postgres,
    start_redis,
)

ENGINES = ["sqlite", "postgresql"]

# PostgreSQL URLs migrated in this session (the schema is created once).
_migrated: set[str] = set()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required under CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+asyncpg://`` URL of a throw-away server's ``kilowatt_test`` database."""
    try:
        server = start_postgres()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    with server:
        yield server.url


@pytest.fixture
def durable_postgres_url() -> Iterator[str]:
    """Like ``postgres_url``, on a server of its own with PostgreSQL's durable defaults
    (``start_postgres(durable=True)``, what the benchmarks run)."""
    if os.environ.get(POSTGRES_ENV):
        pytest.skip("an existing server is used: its settings are its own")
    try:
        server = start_postgres(durable=True)
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    with server:
        yield server.url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://`` URL of a throw-away redis-server."""
    try:
        server = start_redis()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    with server:
        yield server.url


async def _migrate_once(url: str) -> None:
    if url in _migrated:
        return
    store = open_store(url)
    try:
        await upgrade(store)
    finally:
        await store.close()
    _migrated.add(url)


async def truncate_postgres(url: str) -> None:
    """Empty every table of the schema (not ``alembic_version``) and reset identities."""
    names = ", ".join(f'"{table.name}"' for table in tables.metadata.sorted_tables)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        # A connection some test leaked would otherwise make TRUNCATE wait forever.
        await connection.execute("SET lock_timeout = '10s'")
        await connection.execute(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@pytest.fixture(params=ENGINES, ids=ENGINES)
async def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with an empty database: a fresh SQLite file, or the shared
    PostgreSQL database (migrated, every table emptied)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/kilowatt.db"
    url: str = request.getfixturevalue("postgres_url")
    await _migrate_once(url)
    await truncate_postgres(url)
    return url


async def _opened(url: str) -> AsyncIterator[SqlStore]:
    store = open_store(url)
    try:
        await upgrade(store)
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(engine_url: str) -> AsyncIterator[SqlStore]:
    """An open, migrated, empty store on each engine."""
    async for opened in _opened(engine_url):
        yield opened


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    """An open, migrated, empty store on PostgreSQL only."""
    await _migrate_once(postgres_url)
    await truncate_postgres(postgres_url)
    async for opened in _opened(postgres_url):
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """An open, migrated, empty store on SQLite only, in ``tmp_path / "kilowatt.db"``."""
    async for opened in _opened(f"sqlite:///{tmp_path}/kilowatt.db"):
        yield opened
