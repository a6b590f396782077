"""SQLite's commit delay: writes that find the writer busy share one commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kilowatt.store.base import Repositories
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import upgrade


def nothing(repos: Repositories) -> None:
    return None


@pytest.fixture
async def delayed(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = open_store(f"sqlite:///{tmp_path / 'delay.db'}", commit_delay=0.3)
    try:
        await upgrade(store)
        yield store
    finally:
        await store.close()


async def test_writes_arriving_while_the_writer_is_busy_share_a_commit(
    delayed: SqlStore,
) -> None:
    await delayed.write(nothing)  # the writer has just committed: it is busy
    commits = delayed.commits

    first = asyncio.ensure_future(delayed.write(nothing))
    await asyncio.sleep(0.05)  # apart in time, but within the delay
    second = asyncio.ensure_future(delayed.write(nothing))
    await asyncio.gather(first, second)

    assert delayed.commits - commits == 1


async def test_an_isolated_write_commits_at_once(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'idle.db'}", commit_delay=30)
    try:
        await upgrade(store)
        await store.write(nothing)
        await asyncio.sleep(0.1)  # idle for longer than the busy window
        started = time.monotonic()
        await asyncio.wait_for(store.write(nothing), timeout=10)
        assert time.monotonic() - started < 10  # not the 30 s delay
    finally:
        await store.close()


async def test_closing_does_not_wait_out_the_delay(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'close.db'}", commit_delay=30)
    await upgrade(store)
    await store.write(nothing)
    pending = asyncio.ensure_future(store.write(nothing))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(store.close(), timeout=10)
    assert await pending is None


async def test_without_a_delay_writes_apart_in_time_commit_apart(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'nodelay.db'}")
    try:
        await upgrade(store)
        await store.write(nothing)
        commits = store.commits
        first = asyncio.ensure_future(store.write(nothing))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(store.write(nothing))
        await asyncio.gather(first, second)
        assert store.commits - commits == 2
    finally:
        await store.close()
