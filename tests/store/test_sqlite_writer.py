"""SQLite writes: statements and COMMIT on the loop, a waiting BEGIN on the writer thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kilowatt.domain.models import IdTag
from kilowatt.store.base import Repositories
from kilowatt.store.sql import database
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import upgrade
from kilowatt.store.sql.repositories import SqlRepositories


@pytest.fixture
def store(sqlite_store: SqlStore) -> SqlStore:
    return sqlite_store


def thread_name(repos: Repositories) -> str:
    return threading.current_thread().name


async def test_a_unit_of_work_runs_on_the_event_loop_thread(store: SqlStore) -> None:
    names = await asyncio.gather(*(store.write(thread_name) for _ in range(5)))
    assert set(names) == {threading.current_thread().name}


async def test_a_large_unit_runs_on_the_writer_thread(store: SqlStore) -> None:
    name = await store.write_alone(thread_name)
    assert name != threading.current_thread().name
    assert name.startswith("kilowatt-db-writer")


async def test_waiting_for_another_process_s_write_lock_does_not_block_the_loop(
    store: SqlStore, tmp_path: Path
) -> None:
    await store.write(thread_name)
    other = sqlite3.connect(tmp_path / "kilowatt.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        pending = asyncio.ensure_future(store.write(thread_name))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10
        assert not pending.done()  # it waits for the lock, on the writer thread
        other.execute("COMMIT")
        assert await asyncio.wait_for(pending, timeout=10) == threading.current_thread().name
    finally:
        other.close()


async def test_a_failing_unit_fails_alone_and_the_rest_of_its_group_commits(
    store: SqlStore,
) -> None:
    def boom(repos: Repositories) -> None:
        repos.id_tags.add(IdTag("TAG-BAD"), datetime.now(UTC))
        raise ValueError("bad unit")

    def add(tag: str) -> Callable[[Repositories], str]:
        def work(repos: Repositories) -> str:
            repos.id_tags.add(IdTag(tag), datetime.now(UTC))
            return tag

        return work

    results = await asyncio.gather(
        store.write(add("TAG-A")),
        store.write(boom),
        store.write(add("TAG-B")),
        return_exceptions=True,
    )
    assert results[0] == "TAG-A" and results[2] == "TAG-B"
    assert isinstance(results[1], ValueError)

    def stored(repos: Repositories) -> list[str]:
        return [tag.id_tag for tag in repos.id_tags.list_id_tags()]

    assert sorted(await store.read(stored)) == ["TAG-A", "TAG-B"]  # not the bad one's
    assert await store.write(add("TAG-C")) == "TAG-C"  # the writer goes on


async def test_closing_commits_what_is_queued(tmp_path: Path) -> None:
    opened = open_store(f"sqlite:///{tmp_path / 'close.db'}")
    await upgrade(opened)
    pending = [asyncio.ensure_future(opened.write(thread_name)) for _ in range(20)]
    await asyncio.sleep(0)
    await asyncio.wait_for(opened.close(), timeout=10)
    assert all(future.done() and not future.exception() for future in pending)
    with pytest.raises(RuntimeError, match="closed"):
        await opened.write(thread_name)


async def test_the_loop_serves_others_between_slices_of_a_large_group(store: SqlStore) -> None:
    events: list[str] = []

    def slow(repos: Repositories) -> None:
        events.append("unit")
        time.sleep(0.005)  # longer than a slice

    async def other_charge_points() -> None:
        while True:
            events.append("loop")
            await asyncio.sleep(0)

    await store.write(slow)
    events.clear()
    ticker = asyncio.ensure_future(other_charge_points())
    try:
        await asyncio.gather(*(store.write(slow) for _ in range(6)))
    finally:
        ticker.cancel()
    # The first write makes a group alone; the other five queue behind it and make
    # one group: the loop must get a turn between its units.
    units = [index for index, event in enumerate(events) if event == "unit"]
    assert len(units) == 6
    assert "loop" in events[units[1] : units[5]]


async def test_the_wal_is_checkpointed_by_its_own_thread_not_by_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "CHECKPOINT_INTERVAL", 0.05)
    path = tmp_path / "checkpoint.db"
    opened = open_store(f"sqlite:///{path}")
    try:
        await upgrade(opened)

        def autocheckpoint(repos: Repositories) -> object:
            assert isinstance(repos, SqlRepositories)
            return repos.connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()

        assert await opened.write(autocheckpoint) == 0
        await asyncio.sleep(0.2)
        before = path.stat().st_size
        # ~200 pages of rows: far below SQLite's own 1,000-page checkpoint.
        filler = "x" * 3000
        await opened.run_sync_admin(
            lambda connection: connection.exec_driver_sql(
                "CREATE TABLE filler AS WITH RECURSIVE n(i) AS "
                "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250) "
                f"SELECT i, '{filler}' AS body FROM n"
            )
        )
        for _ in range(100):
            if path.stat().st_size > before:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > before  # the pages reached the database file
    finally:
        await opened.close()


async def test_a_hot_path_read_runs_on_the_loop_and_sees_what_is_committed(
    store: SqlStore,
) -> None:
    assert await store.read_now(thread_name) == threading.current_thread().name
    assert (await store.read(thread_name)).startswith("kilowatt-db-reader")

    def active(repos: Repositories) -> int:
        return repos.transactions.count_active()

    def tags(repos: Repositories) -> object:
        return repos.id_tags.get("TAG-NOW")

    assert await store.read_now(tags) is None
    await store.write(lambda repos: repos.id_tags.add(IdTag("TAG-NOW"), datetime.now(UTC)))
    found = await store.read_now(tags)
    assert isinstance(found, IdTag) and found.id_tag == "TAG-NOW"
    assert await store.read_now(active) == 0


async def test_a_begin_failing_on_the_loop_loses_no_unit(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.write(thread_name)  # the write connection exists
    writer = store._writer
    assert writer is not None and writer._connection is not None
    connection = writer._connection
    begin = connection.begin
    failures: list[str] = []

    def flaky() -> Any:
        if threading.current_thread() is threading.main_thread() and not failures:
            failures.append("loop")
            raise RuntimeError("driver hiccup")
        return begin()

    monkeypatch.setattr(connection, "begin", flaky)
    results = await asyncio.wait_for(
        asyncio.gather(store.write(thread_name), store.write(thread_name)), timeout=10
    )
    assert failures == ["loop"]
    assert len(results) == 2  # taken again on the writer thread, none lost
    assert await asyncio.wait_for(store.write(thread_name), timeout=10)
