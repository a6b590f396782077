"""SQL for the message log (the ``message_log`` table).

The log is not part of any OCPP message's unit of work: its rows are written in
batches by a background task through :meth:`SqlStore.run_sync_admin`, each call one
transaction, not waited to disk (``durable=False``: the next group's fsync takes it
there). On SQLite that runs on the writer thread, between two group commits,
so SQLite's own work on the rows (most of an insert of hundreds of rows) runs
beside the event loop with the GIL released, instead of on it; the group commits of
OCPP messages, whose statements are small and many, run on the loop. On PostgreSQL
it is a pooled connection of its own. A flush is written in chunks of
:data:`INSERT_CHUNK` rows, awaited one after the other: the group commits queued
meanwhile run between two chunks, so a second's worth of frames (thousands under
load) never holds their answers back for the whole insert. ``insert_chunk=None``
writes a flush in one transaction: for the message log process
(:mod:`kilowatt.message_log_process`), whose store has no other writer, so that
chunks would only add commits (a chunk of 250 rows cost about as much to commit as
to insert). Reads go through :meth:`SqlStore.run_sync_read` (a reader thread's).

The insert is rendered once per dialect by SQLAlchemy from the table and run with
``exec_driver_sql`` and plain driver values: SQLAlchemy's per-row bind processing
would cost more than the database's own work for a few thousand rows a second.

Retention relies on ids growing with time (rows are inserted in the order the
frames were seen): the purge finds the first row young enough to keep, scanning
from the oldest, and deletes everything before it by primary key range, in batches
so that no single transaction holds the SQLite writer for long. With several nodes
writing, the few rows around the boundary may go a moment early or late.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Row, delete, func, insert, select

from kilowatt.services.message_log import FrameRow, LoggedFrame
from kilowatt.store.sql import tables as t
from kilowatt.store.sql.database import SqlStore
from kilowatt.store.sql.hotpath import (
    ManyRows,
    bind_values,
    hot_sql,
    many_rows,
    per_dialect,
    render,
)

__all__ = ["SqlMessageLog"]

PURGE_BATCH = 5000
# Rows per insert transaction (module docstring): a few milliseconds of the writer.
INSERT_CHUNK = 250

_log = t.message_log

# FrameRow's fields, in order: the parameters of the rendered INSERT.
_COLUMNS = FrameRow._fields


@per_dialect
def _insert_sql(dialect: Dialect) -> str:
    return render(insert(_log).values(bind_values(_log, _COLUMNS)), dialect, _COLUMNS)


@per_dialect
def _insert_many(dialect: Dialect) -> ManyRows:
    # SQLite: multi-row INSERTs (see MultiRowInsert: the writer thread and the GIL);
    # PostgreSQL: one INSERT from unnest() (UnnestInsert: one execution, not one per row).
    return many_rows(dialect, _log, _COLUMNS, _insert_sql(dialect))


def _logged(row: Row[Any]) -> LoggedFrame:
    m = row._mapping
    return LoggedFrame(
        id=m["id"],
        charge_point_id=m["charge_point_id"],
        direction=m["direction"],
        logged_at=m["logged_at"],
        message_type=m["message_type"],
        unique_id=m["unique_id"],
        action=m["action"],
        frame=m["frame"],
        size=m["size"],
        truncated=m["truncated"],
    )


def _inserter(rows: Sequence[FrameRow]) -> Callable[[Connection], None]:
    def work(connection: Connection) -> None:
        dialect = connection.dialect
        # The driver's own parameter values, times converted as the column type would.
        when = hot_sql(dialect).datetime
        values = [(*row[:2], when(row[2]), *row[3:]) for row in rows]
        for sql, parameters in _insert_many(dialect).statements(values):
            connection.exec_driver_sql(sql, parameters)

    return work


class SqlMessageLog:
    """A :class:`kilowatt.services.message_log.MessageLogStore` on a :class:`SqlStore`."""

    def __init__(
        self,
        store: SqlStore,
        *,
        purge_batch: int = PURGE_BATCH,
        insert_chunk: int | None = INSERT_CHUNK,
    ) -> None:
        self._store = store
        self._purge_batch = purge_batch
        self._insert_chunk = insert_chunk

    async def prepare(self) -> None:
        """Create the table (and its index) if missing: a database of the log's own
        (``message_log_database_url``) is never touched by the main one's migrations;
        in the main one, the migrations made it and this only looks."""

        def work(connection: Connection) -> None:
            t.metadata.create_all(connection, tables=[_log], checkfirst=True)

        await self._store.run_sync_admin(work)

    async def insert(self, rows: Sequence[FrameRow]) -> None:
        size = self._insert_chunk or max(len(rows), 1)
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            # A diagnostic log (services.message_log): committed, not waited to disk.
            await self._store.run_sync_admin(_inserter(chunk), durable=False)

    async def list_messages(
        self,
        charge_point_id: str,
        *,
        limit: int = 100,
        before_id: int | None = None,
        direction: str | None = None,
        action: str | None = None,
    ) -> list[LoggedFrame]:
        query = select(_log).where(_log.c.charge_point_id == charge_point_id)
        if before_id is not None:
            query = query.where(_log.c.id < before_id)
        if direction is not None:
            query = query.where(_log.c.direction == direction)
        if action is not None:
            query = query.where(_log.c.action == action)
        # Walks the (charge_point_id, id) index backwards: newest first, no sort.
        query = query.order_by(_log.c.id.desc()).limit(limit)

        def work(connection: Connection) -> list[LoggedFrame]:
            return [_logged(row) for row in connection.execute(query)]

        return await self._store.run_sync_read(work)

    async def purge(self, before: datetime) -> int:
        """Delete the rows logged before ``before``; return how many went."""

        def bounds(connection: Connection) -> tuple[int | None, int | None]:
            first = connection.execute(select(func.min(_log.c.id))).scalar()
            if first is None:
                return None, None
            keep = connection.execute(
                select(_log.c.id).where(_log.c.logged_at >= before).order_by(_log.c.id).limit(1)
            ).scalar()
            if keep is None:
                last = connection.execute(select(func.max(_log.c.id))).scalar_one()
                keep = int(last) + 1
            return int(first), int(keep)

        first, keep = await self._store.run_sync_admin(bounds)
        if first is None or keep is None:
            return 0
        deleted = 0
        low = first
        while low < keep:
            upper = min(low + self._purge_batch, keep)

            def work(connection: Connection, upper: int = upper) -> int:
                result = connection.execute(delete(_log).where(_log.c.id < upper))
                return int(result.rowcount)

            deleted += await self._store.run_sync_admin(work)
            low = upper
        return deleted
