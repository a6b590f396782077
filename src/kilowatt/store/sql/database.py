"""Running units of work on SQLite or PostgreSQL, with group commit.

Writes: every :meth:`SqlStore.write` joins the current *group*; one group runs in one
database transaction and each unit of work's caller is answered after that
transaction commits. While a group is being committed the next one fills up, so
under load many charge points' messages share one commit (and one fsync), and with
no load a write commits at once — no timer, no added latency. If a group fails, it
is rolled back and its units run again one by one, so one bad unit of work fails
alone.

* SQLite (embedded default): the standard ``sqlite3`` driver, one write connection
  and a small pool of reader threads; WAL mode, so readers never wait for the
  writer. A group's statements run on the event loop itself, and only its
  ``BEGIN IMMEDIATE`` (when it must wait for another process's write lock) and its
  ``COMMIT`` run on the writer thread, with the GIL released. Running the statements
  on a thread made every statement step wait for the GIL, which the loop holds while
  it serves charge points: under load the writer spent most of its time waiting for
  the GIL, not for SQLite. The statements of a unit of work are small (point reads
  and writes by key, multi-row inserts); a unit too large for that (an id-tag
  import) is written with :meth:`SqlStore.write_alone` on the writer thread.
* Durability (``synchronous=FULL``, the default) is pipelined: the write connection
  runs with ``synchronous=NORMAL``, so its COMMIT appends the group's pages to the WAL
  and returns without an fsync. The writer thread tells the loop, which starts the
  next group on the connection at once, then ``fdatasync``-s the WAL, and only then
  are the group's units answered: the fsync of one group overlaps the statements of
  the next, instead of the writer standing still for every fsync. Nothing is
  acknowledged before it is on disk, as with FULL; readers (the API) may see a group
  a moment before its fsync ends. ``synchronous=NORMAL`` skips the fsync: a crash of
  the process loses nothing, a power cut may lose the last groups.
* PostgreSQL (``postgresql+asyncpg://``): SQLAlchemy's asyncio engine; the same
  synchronous unit-of-work code runs through ``run_sync`` on an asyncpg connection,
  from a fixed pool (:data:`POOL_SIZE`); the hot path's point reads
  (:meth:`SqlStore.read_now`) run in autocommit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, RootTransaction, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kilowatt.store.base import Repositories
from kilowatt.store.sql.repositories import SqlRepositories

__all__ = ["DatabaseUrlError", "SqlStore", "normalize_url", "open_store"]

log = logging.getLogger("kilowatt.store")

T = TypeVar("T")
Work = Callable[[Repositories], Any]

MAX_GROUP = 512
# Commit delay (SQLite): a unit of work that finds the writer busy — its last
# commit ended less than BUSY_WINDOW ago — waits up to the delay for others to join
# its group, until DELAYED_GROUP are there. One commit (and one fsync) then serves
# many charge points even when they do not send all at once; an isolated write
# commits at once.
BUSY_WINDOW = 0.02
DELAYED_GROUP = 64
# PostgreSQL: connections per process, opened as needed and then kept; a checkout
# finding all in use waits for one. No overflow connections: each would be closed
# again when returned to a full pool. With 10 kept and 10 more allowed, one run of
# 100 charge points opened 140 connections where 20 are ever in use, each a new
# backend process with every statement prepared again (docs/performance.md).
POOL_SIZE = 20
# SQLite: how long a connection waits for another process's lock.
BUSY_TIMEOUT_MS = 30000
# SQLite: a group's units run on the event loop in slices of about this long.
SLICE_SECONDS = 0.002
# SQLite: seconds between two checkpoints of the WAL into the database file, on a
# thread and connection of their own (the writer's commits never run one).
CHECKPOINT_INTERVAL = 1.0


class DatabaseUrlError(ValueError):
    """The database URL names an engine Kilowatt does not run on."""


def normalize_url(url: str) -> URL:
    """Map the URL forms users write onto the drivers Kilowatt uses."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg")
    raise DatabaseUrlError(
        f"unsupported database {backend!r}: use sqlite:///FILE or postgresql+asyncpg://USER:PASS@HOST/DB"
    )


class _Group:
    __slots__ = ("futures", "works")

    def __init__(self) -> None:
        self.works: list[Work] = []
        self.futures: list[asyncio.Future[Any]] = []


# A job queued for the SQLite writer: (function, its future, admin). Units of work
# are grouped; an admin job runs alone, in its own transaction, on the writer thread.
_Job = tuple[Callable[..., Any], "asyncio.Future[Any]", bool]


class _SqliteWriter:
    """SQLite writes: each group's statements run on the event loop, its BEGIN (when
    it waits) and COMMIT, then the fsync that makes it durable, on the writer thread
    (module docstring).

    Only one thread ever uses the write connection at a time: the thread between
    ``_begin`` and its answer, the loop while it runs the group, the thread again
    from the COMMIT until it tells the loop the commit is done; its fsync that
    follows does not use the connection. ``_busy`` is set from the moment a group is
    taken until it is committed, so the next group waits its turn in ``_jobs``;
    ``_unsynced`` counts the committed groups waiting for their fsync (``sync_paths``:
    the WAL to ``fdatasync``, and the database file in case the WAL is gone; None:
    ``synchronous=NORMAL``, answered at commit).
    """

    def __init__(
        self,
        store: SqlStore,
        engine: Engine,
        commit_delay: float = 0.0,
        sync_paths: tuple[str, str] | None = None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._commit_delay = commit_delay
        self._sync_paths = sync_paths
        self._unsynced = 0
        self._loop = asyncio.get_running_loop()
        self._last_commit = 0.0
        self._connection: Connection | None = None
        self._transaction: RootTransaction | None = None
        self._jobs: list[_Job] = []
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._stopping = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kilowatt-db-writer")

    @property
    def queued(self) -> int:
        return len(self._jobs)

    def submit(self, work: Callable[..., Any], future: asyncio.Future[Any], admin: bool) -> None:
        if self._stopping:
            raise RuntimeError("the database is closed")
        self._loop = future.get_loop()
        self._jobs.append((work, future, admin))
        if self._busy:
            return
        if self._timer is None:
            self._start()
        elif len(self._jobs) >= DELAYED_GROUP:
            self._start_now()

    async def stop(self) -> None:
        """Run what is queued, then end the thread."""
        self._stopping = True
        if self._timer is not None:
            self._start_now()
        if self._busy or self._jobs or self._unsynced:
            self._drained = self._loop.create_future()
            await self._drained
        await self._loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    # ------------------------------------------------------------- on the loop

    def _start(self) -> None:
        jobs = self._jobs
        if (
            self._commit_delay > 0
            and not self._stopping
            and not jobs[0][2]
            and len(jobs) < DELAYED_GROUP
            and time.monotonic() - self._last_commit < BUSY_WINDOW
        ):
            # Busy (the last commit ended a moment ago): let the group fill up for
            # a moment rather than commit every unit alone (module docstring).
            self._timer = self._loop.call_later(self._commit_delay, self._start_now)
            return
        self._start_now()

    def _start_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        jobs = self._jobs
        if self._busy:
            return
        if not jobs:
            self._answer_stop()
            return
        self._busy = True
        if jobs[0][2]:
            function, future, _ = jobs.pop(0)
            self._in_thread(partial(self._admin, function), partial(self._answered, [future]))
            return
        end, limit = 1, min(len(jobs), MAX_GROUP)
        while end < limit and not jobs[end][2]:
            end += 1
        taken = jobs[:end]
        del jobs[:end]
        connection = self._connection
        if connection is not None:
            # The write lock is nearly always free: take it here, without waiting
            # (the connection's busy timeout is 0), and only go to the thread to wait
            # for it when another process holds it.
            try:
                self._transaction = connection.begin()
            except Exception:  # locked (OperationalError), or worse: the thread retries
                if connection.invalidated or connection.closed:
                    self._drop(connection)
            else:
                self._began(taken, True, None)
                return
        self._in_thread(self._begin, partial(self._began, taken))

    def _began(self, taken: list[_Job], ok: bool, error: Any) -> None:
        if not ok:
            self._retry_singly(taken, error)
            return
        assert self._connection is not None
        repositories = SqlRepositories(self._connection, defer_appends=True)
        self._run_slice(taken, repositories, [], time.perf_counter())

    def _run_slice(
        self,
        taken: list[_Job],
        repositories: SqlRepositories,
        results: list[Any],
        started: float,
    ) -> None:
        # A large group runs a slice at a time, the loop serving charge points in
        # between; the transaction stays open, nobody else uses the connection.
        deadline = time.perf_counter() + SLICE_SECONDS
        try:
            while len(results) < len(taken):
                results.append(taken[len(results)][0](repositories))
                if len(results) < len(taken) and time.perf_counter() > deadline:
                    self._loop.call_soon(self._run_slice, taken, repositories, results, started)
                    return
            repositories.flush()
        except Exception as exc:
            self._abandon(taken, exc)
            return
        self._commit(taken, results, started)

    def _commit(self, taken: list[_Job], results: list[Any], started: float) -> None:
        """COMMIT on the writer thread (synchronous=NORMAL on this connection: it
        appends the group's pages to the WAL, no fsync), then, with FULL, the fsync;
        the loop hears of each as it ends."""
        connection, transaction = self._connection, self._transaction
        assert connection is not None and transaction is not None
        self._transaction = None
        loop, sync_paths = self._loop, self._sync_paths

        def post(callback: Callable[..., None], *args: Any) -> None:
            # RuntimeError: the loop is closed, nobody waits for these answers.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

        def run() -> None:
            try:
                transaction.commit()
            except Exception as exc:
                self._roll_back(transaction, connection)
                post(self._retry_singly, taken, exc)
                return
            if sync_paths is None:
                post(self._committed, taken, results, started, True)
                return
            post(self._committed, taken, results, started, False)
            try:
                seconds = _timed_sync(sync_paths)
            except Exception as exc:
                post(self._synced, taken, results, started, exc, 0.0)
            else:
                post(self._synced, taken, results, started, None, seconds)

        self._thread.submit(run)

    def _committed(
        self, taken: list[_Job], results: list[Any], started: float, durable: bool
    ) -> None:
        """The group is committed: the connection is free for the next one."""
        self._last_commit = time.monotonic()
        if durable:
            self._answer(taken, results, started)
        else:
            self._unsynced += 1
        self._next()

    def _fsynced(self, seconds: float) -> None:
        hook = self._store.on_fsync
        if hook is not None:
            # Metrics: a failure here must not stop the writer.
            try:
                hook(seconds)
            except Exception:
                log.exception("fsync metrics failed")

    def _synced(
        self, taken: list[_Job], results: list[Any], started: float, error: Any, seconds: float
    ) -> None:
        self._unsynced -= 1
        if error is None:
            self._fsynced(seconds)
            self._answer(taken, results, started)
        else:
            # Committed, but not known to be on disk: nobody is told it is. A charge
            # point sends its message again, and the retry finds what is there.
            log.error(
                "fsync of the SQLite WAL failed: answering a group of %d writes with an "
                "error; check the disk",
                len(taken),
                extra={"reason": repr(error)},
            )
            for _, future, _ in taken:
                _settle(future, error=error)
        if not self._busy and not self._jobs:
            self._answer_stop()

    def _answer_stop(self) -> None:
        if self._drained is not None and not self._drained.done() and not self._unsynced:
            self._drained.set_result(None)

    def _abandon(self, taken: list[_Job], error: BaseException) -> None:
        connection, transaction = self._connection, self._transaction
        assert connection is not None and transaction is not None
        self._transaction = None
        try:
            transaction.rollback()  # nothing was written to disk: no I/O to wait for
        except Exception:
            self._drop(connection)
        self._retry_singly(taken, error)

    def _drop(self, connection: Connection) -> None:
        """Forget a broken write connection (closed on the thread); the next group
        connects again."""
        self._connection = None
        self._in_thread(partial(_close_quietly, connection), _ignore)

    def _answer(self, taken: list[_Job], results: list[Any], started: float) -> None:
        """Answer a group's units: it is committed (and on disk, with FULL)."""
        store = self._store
        elapsed = time.perf_counter() - started
        store.commits += 1
        store.units += len(taken)
        for (_, future, _), result in zip(taken, results, strict=True):
            _settle(future, result=result)
        if store.on_group_committed is not None:
            # Metrics, after the answers: a failure here must not stop the writer.
            try:
                store.on_group_committed(len(taken), elapsed)
            except Exception:
                log.exception("group commit metrics failed")

    def _retry_singly(self, taken: list[_Job], error: BaseException) -> None:
        if len(taken) == 1:
            _settle(taken[0][1], error=error)
            self._next()
            return
        log.warning(
            "group commit failed; retrying its units one by one",
            extra={"units": len(taken), "reason": repr(error)},
        )
        works = [work for work, _, _ in taken]
        self._in_thread(
            partial(self._singly, works), partial(self._answered, [f for _, f, _ in taken])
        )

    def _answered(self, futures: list[asyncio.Future[Any]], ok: bool, outcomes: Any) -> None:
        if not ok:  # the thread itself failed (it reports per unit otherwise)
            outcomes = [(False, outcomes)] * len(futures)
        for future, (good, value) in zip(futures, outcomes, strict=True):
            if good:
                _settle(future, result=value)
            else:
                _settle(future, error=value)
        self._next()

    def _next(self) -> None:
        self._busy = False
        if self._jobs:
            self._start()
        else:
            self._start_now()  # answers a waiting stop()

    def _in_thread(self, function: Callable[[], Any], then: Callable[[bool, Any], None]) -> None:
        loop = self._loop

        def run() -> None:
            try:
                outcome: tuple[bool, Any] = (True, function())
            except Exception as exc:
                outcome = (False, exc)
            # RuntimeError: the loop is closed, nobody waits for these answers.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(then, *outcome)

        self._thread.submit(run)

    # ---------------------------------------------------- on the writer thread

    def _begin(self) -> None:
        self._transaction = self._begin_waiting()

    def _begin_waiting(self) -> RootTransaction:
        # BEGIN IMMEDIATE, waiting its turn for the write lock; on the loop the
        # connection never waits (its busy timeout is 0 but here).
        if self._connection is None:
            self._connection = self._engine.connect()
        connection = self._connection
        driver = connection.connection.dbapi_connection
        assert driver is not None
        try:
            driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            try:
                return connection.begin()
            finally:
                driver.execute("PRAGMA busy_timeout=0")
        except Exception:
            self._forget_if_broken(connection)
            raise

    def _admin(self, function: Callable[[Connection], Any]) -> list[tuple[bool, Any]]:
        try:
            with self._engine.begin() as connection:
                result = function(connection)
            if not isinstance(function, _NotDurable):
                self._sync_here()
        except Exception as exc:
            return [(False, exc)]
        return [(True, result)]

    def _sync_here(self) -> None:
        # On the writer thread, after a commit of its own (an admin job, a unit
        # retried alone): answered once on disk, the writer waiting meanwhile.
        if self._sync_paths is not None:
            seconds = _timed_sync(self._sync_paths)
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._fsynced, seconds)

    def _singly(self, works: list[Work]) -> list[tuple[bool, Any]]:
        store = self._store
        outcomes: list[tuple[bool, Any]] = []
        for work in works:
            try:
                transaction = self._begin_waiting()
                connection = transaction.connection
                try:
                    (result,) = _run_all(connection, [work])
                    transaction.commit()
                    self._sync_here()
                except Exception:
                    self._roll_back(transaction, connection)
                    raise
            except Exception as exc:
                outcomes.append((False, exc))
            else:
                store.commits += 1
                store.units += 1
                outcomes.append((True, result))
        return outcomes

    def _roll_back(self, transaction: RootTransaction, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            transaction.rollback()
        self._forget_if_broken(connection)

    def _forget_if_broken(self, connection: Connection) -> None:
        if connection.invalidated or connection.closed:
            self._connection = None
            _close_quietly(connection)

    def _close(self) -> None:
        if self._connection is not None:
            _close_quietly(self._connection)
            self._connection = None


def _close_quietly(connection: Connection) -> None:
    with contextlib.suppress(Exception):
        connection.close()


def _ignore(ok: bool, value: Any) -> None:
    return None


class _NotDurable:
    """An admin job answered without its own fsync (:meth:`SqlStore.run_sync_admin`)."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[[Connection], Any]) -> None:
        self._function = function

    def __call__(self, connection: Connection) -> Any:
        return self._function(connection)


def _timed_sync(paths: tuple[str, str]) -> float:
    """:func:`_sync_file`; how many seconds it took (``kilowatt_db_fsync_seconds``)."""
    began = time.perf_counter()
    _sync_file(*paths)
    return time.perf_counter() - began


def _sync_file(wal: str, database: str) -> None:
    """Make every transaction committed to the WAL so far durable: ``fdatasync`` the
    WAL file (on Linux any descriptor of a file syncs all its written data). If there
    is no WAL (every connection closed, so SQLite checkpointed and removed it), sync
    the database file instead."""
    try:
        fd = os.open(wal, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(database, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class _Checkpointer:
    """Copies committed pages from the WAL into the database file every
    :data:`CHECKPOINT_INTERVAL`, on a thread and connection of its own.

    SQLite otherwise checkpoints inside the COMMIT that takes the WAL past 1,000
    pages: that commit then writes and fsyncs the database file too, and under load
    every unit of work queued behind it waited 30–70 ms. A PASSIVE checkpoint
    waits for nobody; the writer goes on meanwhile, and the WAL restarts from its
    beginning once everything in it is checkpointed.
    """

    def __init__(self, path: str, interval: float) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(path, interval), name="kilowatt-db-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the thread (blocks for at most one checkpoint: call it in a thread)."""
        self._stopping.set()
        self._thread.join()

    def _run(self, path: str, interval: float) -> None:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            while not self._stopping.wait(interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning(
                        "WAL checkpoint failed; retrying in a moment",
                        extra={"reason": repr(exc)},
                    )
        finally:
            connection.close()


class SqlStore:
    """A :class:`kilowatt.store.base.Store` on SQLAlchemy (see the module docstring)."""

    def __init__(
        self,
        url: URL,
        *,
        sqlite_synchronous: str = "FULL",
        commit_delay: float = 0.0,
        concurrent_groups: int = 1,
    ) -> None:
        self.url = url
        self._commit_delay = commit_delay
        self._concurrent_groups = concurrent_groups
        self.dialect = url.get_backend_name()
        self._pending: _Group | None = None
        self._flushers: set[asyncio.Task[None]] = set()
        self._sync_engine: Engine | None = None
        self._read_engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._writer: _SqliteWriter | None = None
        self._closed = False
        self._readers: ThreadPoolExecutor | None = None
        self._checkpointer: _Checkpointer | None = None
        self._loop_reader = SimpleNamespace(connection=None)  # read_now's connection
        self._reader_local = threading.local()
        self._reader_connections: list[Connection] = []
        self.commits = 0
        self.units = 0
        # Metrics: told (units, seconds) after every group commit, and (SQLite with
        # synchronous=FULL) the seconds of every fsync of the WAL; None: nobody asks.
        self.on_group_committed: Callable[[int, float], None] | None = None
        self.on_fsync: Callable[[float], None] | None = None
        # FULL: the writer commits with NORMAL and fsyncs the WAL itself, before it
        # answers (module docstring).
        self._sync_paths: tuple[str, str] | None = None
        if self.dialect == "sqlite":
            writer_synchronous = sqlite_synchronous
            if sqlite_synchronous == "FULL" and url.database:
                writer_synchronous = "NORMAL"
                self._sync_paths = (url.database + "-wal", url.database)
            self._sync_engine = _sqlite_engine(url, writer_synchronous, writer=True)
            self._read_engine = _sqlite_engine(url, sqlite_synchronous, writer=False)
            self._readers = ThreadPoolExecutor(2, thread_name_prefix="kilowatt-db-reader")
        else:
            self._async_engine = create_async_engine(
                url, pool_size=POOL_SIZE, max_overflow=0, pool_pre_ping=False
            )

    # ---------------------------------------------------------------- writes

    async def write(self, work: Callable[[Repositories], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._sync_engine is not None:
            future: asyncio.Future[T] = loop.create_future()
            self._sqlite_writer().submit(work, future, False)
            return await future
        group = self._pending
        if group is None:
            group = self._pending = _Group()
        future = loop.create_future()
        group.works.append(work)
        group.futures.append(future)
        if len(self._flushers) < self._concurrent_groups:
            self._flushers.add(loop.create_task(self._flush()))
        return await future

    async def write_alone(self, work: Callable[[Repositories], T]) -> T:
        """Like :meth:`write`, for a unit of work too large for the event loop (an
        import of thousands of rows): it commits in its own transaction, on SQLite
        on the writer thread."""
        return await self.run_sync_admin(lambda connection: _run_all(connection, [work])[0])

    async def _flush(self) -> None:
        # One of at most ``concurrent_groups`` flushers: each takes whatever is pending
        # when it is free, so with two, one group fills while two commit.
        try:
            while self._pending is not None:
                group = self._pending
                if len(group.works) > MAX_GROUP:
                    current = _Group()
                    current.works = group.works[:MAX_GROUP]
                    current.futures = group.futures[:MAX_GROUP]
                    del group.works[:MAX_GROUP]
                    del group.futures[:MAX_GROUP]
                else:
                    current = group
                    self._pending = None
                await self._commit_group(current)
        finally:
            # Here, not in a done callback: a write in between would find this
            # flusher still counted and start none, its unit left waiting.
            task = asyncio.current_task()
            if task is not None:
                self._flushers.discard(task)

    async def _commit_group(self, group: _Group) -> None:
        started = time.perf_counter()
        try:
            results = await self._run_write(group.works)
        except Exception as exc:
            if len(group.works) == 1:
                _settle(group.futures[0], error=exc)
                return
            log.warning(
                "group commit failed; retrying its units one by one",
                extra={"units": len(group.works), "reason": repr(exc)},
            )
            for work, future in zip(group.works, group.futures, strict=True):
                try:
                    (result,) = await self._run_write([work])
                except Exception as single:
                    _settle(future, error=single)
                else:
                    self.commits += 1
                    self.units += 1
                    _settle(future, result=result)
            return
        self.commits += 1
        self.units += len(results)
        if self.on_group_committed is not None:
            self.on_group_committed(len(results), time.perf_counter() - started)
        for future, result in zip(group.futures, results, strict=True):
            _settle(future, result=result)

    async def _run_write(self, works: list[Work]) -> list[Any]:
        assert self._async_engine is not None
        async with self._async_engine.begin() as connection:
            return await connection.run_sync(_run_all, works)

    def _sqlite_writer(self) -> _SqliteWriter:
        writer = self._writer
        if writer is None:
            if self._closed:
                raise RuntimeError("the database is closed")
            assert self._sync_engine is not None
            writer = self._writer = _SqliteWriter(
                self, self._sync_engine, self._commit_delay, self._sync_paths
            )
            if self._checkpointer is None:
                assert self.url.database is not None
                self._checkpointer = _Checkpointer(self.url.database, CHECKPOINT_INTERVAL)
        return writer

    @property
    def pending_writes(self) -> int:
        """Units of work waiting for the next group commit (metrics)."""
        if self._writer is not None:
            return self._writer.queued
        group = self._pending
        return 0 if group is None else len(group.works)

    # ----------------------------------------------------------------- reads

    async def read(self, work: Callable[[Repositories], T]) -> T:
        return await self.run_sync_read(lambda connection: work(SqlRepositories(connection)))

    async def read_now(self, work: Callable[[Repositories], T]) -> T:
        """:meth:`read` for a few rows by key on the OCPP hot path (an Authorize's
        id tag): on SQLite it runs at once, on the event loop, on a connection of
        the loop's own; a read from a reader thread costs two thread hops and the
        GIL handed back and forth at every statement step. A read that finds the
        database locked (only ever another process's recovery) goes to a reader
        thread instead of waiting on the loop. On PostgreSQL its statements run in
        autocommit, with no transaction to undo a write: ``work`` only reads."""
        if self._read_engine is not None and not self._closed:
            try:
                return self._read_here(work)
            except OperationalError:
                pass
        elif self._async_engine is not None:
            # Each statement on its own, without BEGIN and ROLLBACK around them: two
            # round trips fewer for a read of one or two statements. Under READ
            # COMMITTED, PostgreSQL's level, a transaction would not give them one
            # snapshot anyway (each statement sees what was committed when it began).
            return await self._postgresql_read(
                lambda connection: work(SqlRepositories(connection)), autocommit=True
            )
        return await self.read(work)

    def _read_here(self, work: Callable[[Repositories], T]) -> T:
        return self._read_on(
            self._loop_reader, lambda connection: work(SqlRepositories(connection)), wait=False
        )

    async def run_sync_read(self, function: Callable[[Connection], T]) -> T:
        """Run ``function`` on a connection in a read-only transaction (rolled back):
        on SQLite a reader thread's, never the writer's."""
        if self._sync_engine is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._readers, self._sqlite_read, function)
        return await self._postgresql_read(function, autocommit=False)

    async def _postgresql_read(self, function: Callable[[Connection], T], *, autocommit: bool) -> T:
        """``function`` on a pooled connection: in a transaction rolled back after
        it, or (``autocommit``) each statement on its own."""
        assert self._async_engine is not None
        async with self._async_engine.connect() as connection:
            if autocommit:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            result: T = await connection.run_sync(function)
            if not autocommit:
                await connection.rollback()
            return result

    def _sqlite_read(self, function: Callable[[Connection], T]) -> T:
        return self._read_on(self._reader_local, function, wait=True)

    def _read_on(self, holder: Any, function: Callable[[Connection], T], *, wait: bool) -> T:
        # Each reader (a reader thread, or the loop) keeps its connection in
        # ``holder.connection``, like the writer: a checkout from the pool and its
        # return cost several times a small query. Between reads it holds no
        # transaction, so it keeps no snapshot that would hold checkpoints. The loop's
        # never waits for a lock (busy timeout 0): ``read_now`` goes to a thread then.
        connection: Connection | None = getattr(holder, "connection", None)
        if connection is None:
            assert self._read_engine is not None
            connection = holder.connection = self._read_engine.connect()
            self._reader_connections.append(connection)
            if not wait:
                driver = connection.connection.dbapi_connection
                assert driver is not None
                driver.execute("PRAGMA busy_timeout=0")
        try:
            connection.begin()
            try:
                return function(connection)
            finally:
                connection.rollback()
        except Exception:
            if connection.invalidated or connection.closed:
                holder.connection = None
            raise

    # ------------------------------------------------------------- lifecycle

    async def run_sync_admin(
        self, function: Callable[[Connection], T], *, durable: bool = True
    ) -> T:
        """Run ``function`` on a connection in its own transaction (migrations, tools).

        ``durable=False`` (SQLite, ``synchronous=FULL``): answered once committed,
        without waiting for its fsync — for what nothing depends on, like the
        message log; the next group's fsync takes it to disk."""
        if self._sync_engine is not None:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            job = function if durable else _NotDurable(function)
            self._sqlite_writer().submit(job, future, True)
            return await future
        assert self._async_engine is not None
        async with self._async_engine.begin() as connection:
            return await connection.run_sync(function)

    async def close(self) -> None:
        """Commit what is queued, then release connections and threads."""
        while flushing := [flusher for flusher in self._flushers if not flusher.done()]:
            await asyncio.wait_for(asyncio.shield(flushing[0]), timeout=30)
        if self._sync_engine is not None:
            assert self._readers is not None
            writer, self._writer = self._writer, None
            self._closed = True
            if writer is not None:
                # What is queued is committed (and answered) before the thread ends.
                await writer.stop()
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                await asyncio.to_thread(checkpointer.stop)
            # Reads still running finish first: their threads' connections close next.
            self._readers.shutdown(wait=True)
            for connection in self._reader_connections:
                connection.close()
            self._reader_connections.clear()
            assert self._read_engine is not None
            self._sync_engine.dispose()
            self._read_engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # the waiter was cancelled; the work is committed all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _run_all(connection: Connection, works: list[Work]) -> list[Any]:
    # The group's meter values and status history go in with one statement per
    # table after its last unit of work, in its transaction: nothing is answered
    # before it is committed, and if that insert fails, the group fails and its units
    # are run again one by one like for any other error.
    repositories = SqlRepositories(connection, defer_appends=True)
    results = [work(repositories) for work in works]
    repositories.flush()
    return results


def _sqlite_engine(url: URL, synchronous: str, *, writer: bool) -> Engine:
    if (url.database or ":memory:") == ":memory:":
        raise DatabaseUrlError(
            "an in-memory SQLite database cannot be shared by the writer and the readers: "
            "use a file, e.g. sqlite:///kilowatt.db"
        )
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions break
        # SAVEPOINT), then set the durability and concurrency pragmas.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if writer:
            # Checkpoints run on their own thread (_Checkpointer), not in our commits.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # The writer takes the write lock up front (IMMEDIATE): a deferred
        # transaction that turns into a write can fail with SQLITE_BUSY instead of
        # waiting its turn. Readers take a snapshot and never block the writer.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def open_store(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    commit_delay: float = 0.0,
    concurrent_groups: int = 1,
) -> SqlStore:
    return SqlStore(
        normalize_url(url),
        sqlite_synchronous=sqlite_synchronous,
        commit_delay=commit_delay,
        concurrent_groups=concurrent_groups,
    )
