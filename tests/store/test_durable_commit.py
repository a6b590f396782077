"""SQLite durability with ``synchronous=FULL``: the writer commits with NORMAL and
fsyncs the WAL itself, on the writer thread, before any unit of the group is answered;
the next group runs its statements meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from kilowatt.domain.models import IdTag
from kilowatt.store.base import Repositories
from kilowatt.store.sql import database
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.migrate import upgrade


class Syncs:
    """Stands in for the fdatasync of the WAL: records every call and, while held,
    keeps it waiting on the sync thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (wal, database, thread)
        self.released = threading.Event()
        self.released.set()
        self.started = threading.Event()
        self.error: OSError | None = None
        self._real: Callable[[str, str], None] = database._sync_file

    def hold(self) -> None:
        self.released.clear()
        self.started.clear()

    def release(self) -> None:
        self.released.set()

    def __call__(self, wal: str, path: str) -> None:
        self.calls.append((wal, path, threading.current_thread().name))
        self.started.set()
        assert self.released.wait(10)
        if self.error is not None:
            raise self.error
        self._real(wal, path)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Syncs]:
    recorder = Syncs()
    monkeypatch.setattr(database, "_sync_file", recorder)
    yield recorder
    recorder.release()


@pytest.fixture
async def store(tmp_path: Path, syncs: Syncs) -> AsyncIterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'durable.db'}")
    try:
        await upgrade(opened)
        yield opened
    finally:
        syncs.release()
        await opened.close()


def add(tag: str) -> Callable[[Repositories], str]:
    def work(repos: Repositories) -> str:
        repos.id_tags.add(IdTag(tag), datetime.now(UTC))
        return tag

    return work


def stored_tags(path: Path) -> list[str]:
    """What another process sees committed."""
    other = sqlite3.connect(path)
    try:
        return sorted(row[0] for row in other.execute("SELECT id_tag FROM id_tags"))
    finally:
        other.close()


async def wait_for_sync_to_start(syncs: Syncs) -> None:
    assert await asyncio.to_thread(syncs.started.wait, 10)


async def test_a_write_is_answered_only_after_the_wal_is_synced(
    store: SqlStore, syncs: Syncs, tmp_path: Path
) -> None:
    syncs.hold()
    pending = asyncio.ensure_future(store.write(add("TAG-A")))
    await wait_for_sync_to_start(syncs)
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert not pending.done()  # committed, but not yet on disk: not answered
    assert stored_tags(tmp_path / "durable.db") == ["TAG-A"]
    syncs.release()
    assert await asyncio.wait_for(pending, timeout=10) == "TAG-A"
    wal, path, thread = syncs.calls[-1]
    assert wal == str(tmp_path / "durable.db") + "-wal"
    assert path == str(tmp_path / "durable.db")
    assert thread.startswith("kilowatt-db-writer")


async def test_the_write_connection_itself_does_not_fsync(store: SqlStore) -> None:
    # (synchronous=FULL on it would fsync inside the COMMIT, before the loop hears
    # the connection is free: the next group could not overlap it.)
    def synchronous(repos: Repositories) -> int:
        connection: Connection = repos.connection  # type: ignore[attr-defined]
        return int(connection.execute(text("PRAGMA synchronous")).scalar_one())

    assert await store.write(synchronous) == 1  # NORMAL: the fsync is the sync thread's


async def test_the_next_group_runs_while_the_previous_one_is_synced(
    store: SqlStore, syncs: Syncs, tmp_path: Path
) -> None:
    ran: list[str] = []

    def second_unit(repos: Repositories) -> str:
        ran.append(threading.current_thread().name)
        return add("TAG-B")(repos)

    syncs.hold()
    first = asyncio.ensure_future(store.write(add("TAG-A")))
    await wait_for_sync_to_start(syncs)
    second = asyncio.ensure_future(store.write(second_unit))
    for _ in range(50):
        if ran:
            break
        await asyncio.sleep(0.01)
    # The second group ran its statements, on the loop, while the first one's fsync
    # was held; its own COMMIT waits for the writer thread.
    assert ran == [threading.current_thread().name]
    assert stored_tags(tmp_path / "durable.db") == ["TAG-A"]
    assert not first.done() and not second.done()
    syncs.release()
    assert await asyncio.wait_for(asyncio.gather(first, second), timeout=10) == [
        "TAG-A",
        "TAG-B",
    ]
    # The second group was answered by an fsync that started after its commit.
    assert len(syncs.calls) >= 2


async def test_a_failed_fsync_fails_the_writes_it_covers_and_the_writer_goes_on(
    store: SqlStore, syncs: Syncs
) -> None:
    syncs.error = OSError(5, "Input/output error")
    with pytest.raises(OSError, match="Input/output"):
        await asyncio.wait_for(store.write(add("TAG-A")), timeout=10)
    syncs.error = None
    assert await asyncio.wait_for(store.write(add("TAG-B")), timeout=10) == "TAG-B"


async def test_an_admin_job_is_synced_unless_it_says_it_need_not_be(
    store: SqlStore, syncs: Syncs
) -> None:
    def one(connection: Connection) -> int:
        return int(connection.execute(text("SELECT 1")).scalar_one())

    before = len(syncs.calls)
    assert await store.run_sync_admin(one) == 1
    assert len(syncs.calls) == before + 1
    assert syncs.calls[-1][2].startswith("kilowatt-db-writer")  # on its own thread
    assert await store.run_sync_admin(one, durable=False) == 1  # the message log's
    assert len(syncs.calls) == before + 1


async def test_closing_waits_for_the_last_fsync(tmp_path: Path, syncs: Syncs) -> None:
    opened = open_store(f"sqlite:///{tmp_path / 'close.db'}")
    await upgrade(opened)
    syncs.hold()
    pending = asyncio.ensure_future(opened.write(add("TAG-A")))
    await wait_for_sync_to_start(syncs)
    closing = asyncio.ensure_future(opened.close())
    await asyncio.sleep(0.05)
    assert not closing.done() and not pending.done()
    syncs.release()
    await asyncio.wait_for(closing, timeout=10)
    assert pending.done() and pending.result() == "TAG-A"


async def test_with_synchronous_normal_nothing_waits_for_an_fsync(
    tmp_path: Path, syncs: Syncs
) -> None:
    opened = open_store(f"sqlite:///{tmp_path / 'normal.db'}", sqlite_synchronous="NORMAL")
    try:
        await upgrade(opened)
        assert await opened.write(add("TAG-A")) == "TAG-A"
    finally:
        await opened.close()
    assert syncs.calls == []


def test_the_real_sync_falls_back_to_the_database_file_without_a_wal(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    path.write_bytes(b"")
    database._sync_file(str(tmp_path / "plain.db-wal"), str(path))  # no error
    with pytest.raises(FileNotFoundError):
        database._sync_file(str(tmp_path / "gone-wal"), str(tmp_path / "gone.db"))


async def test_many_writers_all_answered_once_on_disk(store: SqlStore, syncs: Syncs) -> None:
    results: list[Any] = await asyncio.wait_for(
        asyncio.gather(*(store.write(add(f"TAG-{n:03d}")) for n in range(200))), timeout=30
    )
    assert results == [f"TAG-{n:03d}" for n in range(200)]
    # Shared fsyncs: far fewer than one per write.
    assert 1 <= len(syncs.calls) < 200


async def test_a_failed_commit_loses_no_unit_its_units_run_again_one_by_one(
    store: SqlStore, syncs: Syncs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sqlalchemy import RootTransaction

    commit = RootTransaction.commit
    commits: list[str] = []

    def second_fails(self: RootTransaction) -> None:
        commits.append(threading.current_thread().name)
        if len(commits) == 2:
            raise sqlite3.OperationalError("disk I/O error")
        commit(self)

    await store.write(add("TAG-X"))  # the write connection exists
    monkeypatch.setattr(RootTransaction, "commit", second_fails)
    # The first write makes a group alone; the five after it queue and make the
    # second group, whose COMMIT fails: each of its units runs again alone.
    results = await asyncio.wait_for(
        asyncio.gather(*(store.write(add(f"TAG-{n}")) for n in range(6))), timeout=10
    )
    assert results == [f"TAG-{n}" for n in range(6)]
    assert commits[1].startswith("kilowatt-db-writer")
    assert len(commits) == 2 + 5
    assert stored_tags(tmp_path / "durable.db") == [f"TAG-{n}" for n in range(6)] + ["TAG-X"]
    assert await asyncio.wait_for(store.write(add("TAG-6")), timeout=10) == "TAG-6"
