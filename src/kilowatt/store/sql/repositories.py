"""SQL behind the repository interfaces of :mod:`kilowatt.store.base`.

Every method runs on the synchronous SQLAlchemy connection of the current unit of
work; :mod:`kilowatt.store.sql.database` decides on which thread or event loop that
connection lives, and when the transaction commits.

What every OCPP message runs is kept cheap (see :mod:`kilowatt.store.sql.hotpath`):
writes are SQL rendered once per dialect and run with ``exec_driver_sql``; reads are
Core statements built once at import (so SQLAlchemy's compiled cache is hit without
building a statement or its cache key per call) whose rows are unpacked by position.
Administrative queries build their statements per call.

Append-only rows (meter values, status history) can be *deferred*: the group
commit's repositories collect the rows of all its units of work and insert them with
one statement per table (a few multi-row INSERTs on SQLite, an INSERT from
``unnest()`` on PostgreSQL) just before the commit (:meth:`SqlRepositories.flush`).
A read of those tables writes what is pending first, so a unit of work still reads
its own writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from kilowatt.domain.meter import parse_value
from kilowatt.domain.models import (
    AuthorizationStatus,
    BootInfo,
    ChargePoint,
    Connector,
    IdTag,
    MeterSample,
    Registration,
    StatusRecord,
    Transaction,
    TransactionState,
    UnknownStop,
)
from kilowatt.store.base import AlreadyExists
from kilowatt.store.sql import tables as t
from kilowatt.store.sql.api_tokens import SqlApiTokens
from kilowatt.store.sql.configuration import SqlConfiguration
from kilowatt.store.sql.hotpath import (
    DriverQuery,
    HotSql,
    ManyRows,
    hot_sql,
    json_text,
    per_dialect,
)

__all__ = ["SqlRepositories"]


def _state_is(state: TransactionState) -> Any:
    """``transactions.state = 'value'``, with the value written into the SQL, not bound.

    SQLite decides at prepare time whether a partial index serves a query, comparing
    the query's terms with the index's WHERE (``uq_transactions_active_connector``:
    ``state = 'active'``). A *bound* state takes part in that decision, so SQLite
    prepares the statement again at every execution to decide anew: StartTransaction's
    lookups cost 45 µs instead of 6, Authorize's 19 instead of 4. A literal is decided
    once. (The value is one of the enum's own, never user input.)
    """
    return _tx.state == literal_column(f"'{state.value}'")


def _insert_ignoring_duplicates(connection: Connection, table: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(connection.dialect.name)  # pragma: no cover


# The columns each record is read from, in the order its converter unpacks them.
_cp = t.charge_points.c
CHARGE_POINT_COLUMNS = (
    _cp.id,
    _cp.registration,
    _cp.description,
    _cp.security_profile,
    _cp.password_hash,
    _cp.vendor,
    _cp.model,
    _cp.serial_number,
    _cp.charge_box_serial_number,
    _cp.firmware_version,
    _cp.iccid,
    _cp.imsi,
    _cp.meter_type,
    _cp.meter_serial_number,
    _cp.last_boot_at,
    _cp.last_seen_at,
    _cp.connected,
    _cp.connected_since,
    _cp.remote_address,
    _cp.created_at,
)


def _charge_point(row: Sequence[Any]) -> ChargePoint:
    (
        id_,
        registration,
        description,
        security_profile,
        password_hash,
        vendor,
        model,
        serial_number,
        charge_box_serial_number,
        firmware_version,
        iccid,
        imsi,
        meter_type,
        meter_serial_number,
        last_boot_at,
        last_seen_at,
        connected,
        connected_since,
        remote_address,
        created_at,
    ) = row
    return ChargePoint(
        id=id_,
        registration=Registration(registration),
        description=description,
        security_profile=security_profile,
        password_hash=password_hash,
        vendor=vendor,
        model=model,
        serial_number=serial_number,
        charge_box_serial_number=charge_box_serial_number,
        firmware_version=firmware_version,
        iccid=iccid,
        imsi=imsi,
        meter_type=meter_type,
        meter_serial_number=meter_serial_number,
        last_boot_at=last_boot_at,
        last_seen_at=last_seen_at,
        connected=connected,
        connected_since=connected_since,
        remote_address=remote_address,
        created_at=created_at,
    )


_co = t.connectors.c
CONNECTOR_COLUMNS = (
    _co.charge_point_id,
    _co.connector_id,
    _co.status,
    _co.error_code,
    _co.info,
    _co.vendor_id,
    _co.vendor_error_code,
    _co.status_timestamp,
    _co.updated_at,
)


# The columns are in the dataclass's field order, so a row maps onto it directly.
assert [c.name for c in CONNECTOR_COLUMNS] == [f.name for f in fields(Connector)]


def _connector(row: Sequence[Any]) -> Connector:
    return Connector(*row)


_it = t.id_tags.c
ID_TAG_COLUMNS = (
    _it.id_tag,
    _it.status,
    _it.expiry_date,
    _it.parent_id_tag,
    _it.owner,
    _it.note,
    _it.max_concurrent_transactions,
    _it.created_at,
)


def _id_tag(row: Sequence[Any]) -> IdTag:
    id_tag, status, expiry_date, parent_id_tag, owner, note, max_concurrent, created_at = row
    return IdTag(
        id_tag=id_tag,
        status=AuthorizationStatus(status),
        expiry_date=expiry_date,
        parent_id_tag=parent_id_tag,
        owner=owner,
        note=note,
        max_concurrent_transactions=max_concurrent,
        created_at=created_at,
    )


_tx = t.transactions.c
_IS_ACTIVE = _state_is(TransactionState.ACTIVE)
TRANSACTION_COLUMNS = (
    _tx.id,
    _tx.charge_point_id,
    _tx.connector_id,
    _tx.id_tag,
    _tx.meter_start,
    _tx.started_at,
    _tx.state,
    _tx.start_status,
    _tx.reservation_id,
    _tx.meter_stop,
    _tx.stopped_at,
    _tx.stop_reason,
    _tx.stop_id_tag,
    _tx.energy_wh,
    _tx.flags,
    _tx.created_at,
)


def _transaction(row: Sequence[Any]) -> Transaction:
    (
        id_,
        charge_point_id,
        connector_id,
        id_tag,
        meter_start,
        started_at,
        state,
        start_status,
        reservation_id,
        meter_stop,
        stopped_at,
        stop_reason,
        stop_id_tag,
        energy_wh,
        flags,
        created_at,
    ) = row
    return Transaction(
        id=id_,
        charge_point_id=charge_point_id,
        connector_id=connector_id,
        id_tag=id_tag,
        meter_start=meter_start,
        started_at=started_at,
        state=TransactionState(state),
        start_status=AuthorizationStatus(start_status),
        reservation_id=reservation_id,
        meter_stop=meter_stop,
        stopped_at=stopped_at,
        stop_reason=stop_reason,
        stop_id_tag=stop_id_tag,
        energy_wh=energy_wh,
        flags=tuple(flags or ()),
        created_at=created_at,
    )


_mv = t.meter_values.c
METER_VALUE_COLUMNS = (
    _mv.charge_point_id,
    _mv.connector_id,
    _mv.transaction_id,
    _mv.timestamp,
    _mv.raw_value,
    _mv.measurand,
    _mv.unit,
    _mv.context,
    _mv.location,
    _mv.format,
    _mv.phase,
)


def _sample(row: Sequence[Any]) -> MeterSample:
    (
        charge_point_id,
        connector_id,
        transaction_id,
        timestamp,
        raw_value,
        measurand,
        unit,
        context,
        location,
        format_,
        phase,
    ) = row
    return MeterSample(
        charge_point_id=charge_point_id,
        connector_id=connector_id,
        transaction_id=transaction_id,
        timestamp=timestamp,
        raw_value=raw_value,
        value=parse_value(raw_value),
        measurand=measurand,
        unit=unit,
        context=context,
        location=location,
        format=format_,
        phase=phase or None,
    )


# Hot-path reads, built once (see the module docstring).
_GET_CHARGE_POINT = select(*CHARGE_POINT_COLUMNS).where(_cp.id == bindparam("id"))
_GET_CONNECTOR = select(*CONNECTOR_COLUMNS).where(
    and_(_co.charge_point_id == bindparam("cp"), _co.connector_id == bindparam("connector"))
)
_LIST_CONNECTORS = (
    select(*CONNECTOR_COLUMNS)
    .where(_co.charge_point_id == bindparam("cp"))
    .order_by(_co.connector_id)
)
_GET_ID_TAG = select(*ID_TAG_COLUMNS).where(_it.id_tag == bindparam("id_tag"))
_GET_TRANSACTION = select(*TRANSACTION_COLUMNS).where(_tx.id == bindparam("id"))
_FIND_STARTED = select(*TRANSACTION_COLUMNS).where(
    and_(
        _tx.charge_point_id == bindparam("cp"),
        _tx.connector_id == bindparam("connector"),
        _tx.id_tag == bindparam("id_tag"),
        _tx.started_at == bindparam("started_at"),
        _tx.meter_start == bindparam("meter_start"),
    )
)
_ACTIVE = select(*TRANSACTION_COLUMNS).where(_IS_ACTIVE).order_by(_tx.id)
# list_active's four filter combinations, keyed by (charge point given, connector given).
_LIST_ACTIVE = {
    (False, False): _ACTIVE,
    (True, False): _ACTIVE.where(_tx.charge_point_id == bindparam("cp")),
    (False, True): _ACTIVE.where(_tx.connector_id == bindparam("connector")),
    (True, True): _ACTIVE.where(
        _tx.charge_point_id == bindparam("cp"), _tx.connector_id == bindparam("connector")
    ),
}
_COUNT_ACTIVE_FOR_TAG = (
    select(func.count())
    .select_from(t.transactions)
    .where(and_(_tx.id_tag == bindparam("id_tag"), _IS_ACTIVE))
)
_COUNT_ACTIVE = select(func.count()).select_from(t.transactions).where(_IS_ACTIVE)
# Authorization reads the tag and counts its active transactions: one statement
# (a correlated count) instead of two.
_GET_ID_TAG_WITH_ACTIVE_COUNT = select(
    *ID_TAG_COLUMNS,
    select(func.count())
    .select_from(t.transactions)
    .where(and_(_tx.id_tag == _it.id_tag, _IS_ACTIVE))
    .scalar_subquery(),
).where(_it.id_tag == bindparam("id_tag"))
# StartTransaction's two lookups in one statement; the first column tells the
# transaction a retransmitted StartTransaction created (1) from the connector's
# active ones (0). Each half is served by its own index.
_FIND_FOR_START = union_all(
    select(literal(1).label("started"), *TRANSACTION_COLUMNS).where(
        and_(
            _tx.charge_point_id == bindparam("cp"),
            _tx.connector_id == bindparam("connector"),
            _tx.id_tag == bindparam("id_tag"),
            _tx.started_at == bindparam("started_at"),
            _tx.meter_start == bindparam("meter_start"),
        )
    ),
    select(literal(0).label("started"), *TRANSACTION_COLUMNS).where(
        and_(
            _tx.charge_point_id == bindparam("cp"),
            _tx.connector_id == bindparam("connector"),
            _IS_ACTIVE,
        )
    ),
).order_by(literal_column("id"))


class _DriverReads:
    """The hot path's reads as :class:`DriverQuery`, one set per dialect."""

    __slots__ = ("find_for_start", "id_tag_with_active_count", "lock_for_start", "transaction")

    def __init__(self, dialect: Dialect) -> None:
        self.lock_for_start = DriverQuery(_LOCK_FOR_START, dialect)  # used on PostgreSQL
        self.find_for_start = DriverQuery(_FIND_FOR_START, dialect)
        self.id_tag_with_active_count = DriverQuery(_GET_ID_TAG_WITH_ACTIVE_COUNT, dialect)
        self.transaction = DriverQuery(_GET_TRANSACTION, dialect)  # StopTransaction's


driver_reads = per_dialect(_DriverReads)


class _Appends:
    """Rows for one append-only table, inserted at once or deferred to :meth:`flush`."""

    __slots__ = ("_c", "_deferred", "_many", "_rows", "_sql")

    def __init__(
        self, connection: Connection, sql: str, many: ManyRows | None, *, deferred: bool
    ) -> None:
        self._c = connection
        self._sql = sql
        self._many = many
        self._deferred = deferred
        self._rows: list[tuple[Any, ...]] = []

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        if self._deferred:
            self._rows.extend(rows)
        elif rows:
            self._execute(rows)

    def flush(self) -> None:
        if self._rows:
            # Taken first: a failed insert fails the transaction, and must not be
            # attempted again by a later flush.
            rows, self._rows = self._rows, []
            self._execute(rows)

    def _execute(self, rows: list[tuple[Any, ...]]) -> None:
        # One row: a plain execute (executemany costs more for a single row).
        if len(rows) == 1:
            self._c.exec_driver_sql(self._sql, rows[0])
        elif self._many is not None:
            for sql, parameters in self._many.statements(rows):
                self._c.exec_driver_sql(sql, parameters)
        else:
            self._c.exec_driver_sql(self._sql, rows)


class SqlChargePoints:
    __slots__ = ("_c", "_connectors", "_sql", "_status")

    def __init__(
        self, connection: Connection, sql: HotSql, status: _Appends, connectors: _Appends
    ) -> None:
        self._c = connection
        self._sql = sql
        self._status = status
        self._connectors = connectors

    def get(self, charge_point_id: str) -> ChargePoint | None:
        row = self._c.execute(_GET_CHARGE_POINT, {"id": charge_point_id}).first()
        return None if row is None else _charge_point(row)

    def list_charge_points(self) -> list[ChargePoint]:
        points = [
            _charge_point(row)
            for row in self._c.execute(select(*CHARGE_POINT_COLUMNS).order_by(_cp.id))
        ]
        by_id = {point.id: point for point in points}
        rows = self._c.execute(
            select(*CONNECTOR_COLUMNS).order_by(_co.charge_point_id, _co.connector_id)
        )
        for row in rows:
            point = by_id.get(row.charge_point_id)
            if point is not None:
                point.connectors.append(_connector(row))
        return points

    def add(self, charge_point: ChargePoint, now: datetime) -> None:
        values = {
            "id": charge_point.id,
            "registration": charge_point.registration.value,
            "description": charge_point.description,
            "security_profile": charge_point.security_profile,
            "password_hash": charge_point.password_hash,
            "connected": False,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._c.begin_nested():
                self._c.execute(insert(t.charge_points).values(**values))
        except IntegrityError:
            raise AlreadyExists(f"charge point {charge_point.id!r} exists already") from None

    def update(self, charge_point_id: str, now: datetime, **fields: Any) -> bool:
        if "registration" in fields and isinstance(fields["registration"], Registration):
            fields["registration"] = fields["registration"].value
        result = self._c.execute(
            update(t.charge_points)
            .where(_cp.id == charge_point_id)
            .values(updated_at=now, **fields)
        )
        return bool(result.rowcount)

    def remove(self, charge_point_id: str) -> bool:
        self._c.execute(delete(t.connectors).where(_co.charge_point_id == charge_point_id))
        result = self._c.execute(delete(t.charge_points).where(_cp.id == charge_point_id))
        return bool(result.rowcount)

    # -- cluster: connection state reconciled with presence (kilowatt.cluster.node)

    def list_connected(self) -> list[tuple[str, datetime | None]]:
        rows = self._c.execute(select(_cp.id, _cp.connected_since).where(_cp.connected.is_(True)))
        return [(row.id, row.connected_since) for row in rows]

    def clear_connection(
        self, charge_point_id: str, *, connected_since: datetime | None, now: datetime
    ) -> bool:
        # One conditional UPDATE: PostgreSQL re-checks the condition on a row another
        # transaction is changing, so a reconnection committed meanwhile wins.
        since = (
            _cp.connected_since.is_(None)
            if connected_since is None
            else _cp.connected_since == connected_since
        )
        result = self._c.execute(
            update(t.charge_points)
            .where(_cp.id == charge_point_id, _cp.connected.is_(True), since)
            .values(connected=False, connected_since=None, updated_at=now)
        )
        return bool(result.rowcount)

    def record_boot(self, charge_point_id: str, boot: BootInfo, now: datetime) -> None:
        self._c.execute(
            update(t.charge_points)
            .where(_cp.id == charge_point_id)
            .values(
                vendor=boot.vendor,
                model=boot.model,
                serial_number=boot.serial_number,
                charge_box_serial_number=boot.charge_box_serial_number,
                firmware_version=boot.firmware_version,
                iccid=boot.iccid,
                imsi=boot.imsi,
                meter_type=boot.meter_type,
                meter_serial_number=boot.meter_serial_number,
                last_boot_at=now,
                last_seen_at=now,
                updated_at=now,
            )
        )

    def set_connection(
        self, charge_point_id: str, *, connected: bool, now: datetime, remote_address: str | None
    ) -> None:
        values: dict[str, Any] = {"connected": connected, "updated_at": now}
        if connected:
            values.update(connected_since=now, remote_address=remote_address, last_seen_at=now)
        else:
            values.update(connected_since=None)
        self._c.execute(update(t.charge_points).where(_cp.id == charge_point_id).values(**values))

    def touch(self, seen: Sequence[tuple[str, datetime]]) -> None:
        if not seen:
            return
        to_datetime = self._sql.datetime
        if self._sql.touch_unlocked is not None:
            # Rows another transaction holds are skipped, not waited for (its StartTransaction
            # on another node, say): the charge point keeps talking, the next flush has it.
            # Waiting could close a cycle with that transaction, which PostgreSQL breaks only
            # after deadlock_timeout (a second), failing one side's whole group.
            ordered = sorted(seen)
            ids = [charge_point_id for charge_point_id, _ in ordered]
            times = [to_datetime(at) for _, at in ordered]
            self._c.exec_driver_sql(self._sql.touch_unlocked, (ids, times))
            return
        if self._sql.touch_many is not None:
            # One statement for thousands of charge points: an executemany would give
            # the GIL up (and wait to get it back) once per row.
            pairs = [(charge_point_id, to_datetime(at)) for charge_point_id, at in seen]
            self._c.exec_driver_sql(self._sql.touch_many, (json.dumps(pairs),))
            return
        rows = [(to_datetime(at), charge_point_id) for charge_point_id, at in seen]
        self._c.exec_driver_sql(self._sql.touch_charge_point, rows)

    def mark_all_disconnected(self, now: datetime) -> None:
        self._c.execute(
            update(t.charge_points)
            .where(_cp.connected.is_(True))
            .values(connected=False, connected_since=None, updated_at=now)
        )

    def get_connector(self, charge_point_id: str, connector_id: int) -> Connector | None:
        self._connectors.flush()
        row = self._c.execute(
            _GET_CONNECTOR, {"cp": charge_point_id, "connector": connector_id}
        ).first()
        return None if row is None else _connector(row)

    def list_connectors(self, charge_point_id: str) -> list[Connector]:
        self._connectors.flush()
        rows = self._c.execute(_LIST_CONNECTORS, {"cp": charge_point_id})
        return [_connector(row) for row in rows]

    def update_connector(self, connector: Connector) -> None:
        # One upsert (ON CONFLICT (charge_point_id, connector_id) DO UPDATE) instead
        # of an UPDATE followed, the first time, by an INSERT. In a group commit it is
        # deferred like the appends, and the group's upserts go out as one executemany,
        # in order (on PostgreSQL one round trip instead of one per StatusNotification;
        # a read of connectors writes what is pending first).
        to_datetime = self._sql.datetime
        self._connectors.add(
            [
                (
                    connector.charge_point_id,
                    connector.connector_id,
                    connector.status,
                    connector.error_code,
                    connector.info,
                    connector.vendor_id,
                    connector.vendor_error_code,
                    to_datetime(connector.status_timestamp),
                    to_datetime(connector.updated_at),
                )
            ]
        )

    def add_status(self, record: StatusRecord) -> None:
        to_datetime = self._sql.datetime
        self._status.add(
            [
                (
                    record.charge_point_id,
                    record.connector_id,
                    record.status,
                    record.error_code,
                    record.info,
                    record.vendor_id,
                    record.vendor_error_code,
                    to_datetime(record.timestamp),
                    to_datetime(record.received_at),
                )
            ]
        )

    def list_status_history(
        self, charge_point_id: str, *, connector_id: int | None = None, limit: int = 100
    ) -> list[StatusRecord]:
        self._status.flush()
        sh = t.status_history.c
        query = select(
            sh.charge_point_id,
            sh.connector_id,
            sh.status,
            sh.error_code,
            sh.info,
            sh.vendor_id,
            sh.vendor_error_code,
            sh.timestamp,
            sh.received_at,
        ).where(sh.charge_point_id == charge_point_id)
        if connector_id is not None:
            query = query.where(sh.connector_id == connector_id)
        query = query.order_by(sh.id.desc()).limit(limit)
        return [
            StatusRecord(
                charge_point_id=row.charge_point_id,
                connector_id=row.connector_id,
                status=row.status,
                error_code=row.error_code,
                info=row.info,
                vendor_id=row.vendor_id,
                vendor_error_code=row.vendor_error_code,
                timestamp=row.timestamp,
                received_at=row.received_at,
            )
            for row in self._c.execute(query)
        ]


class SqlIdTags:
    __slots__ = ("_c", "_driver")

    def __init__(self, connection: Connection, driver: _DriverReads) -> None:
        self._c = connection
        self._driver = driver

    def get(self, id_tag: str) -> IdTag | None:
        row = self._c.execute(_GET_ID_TAG, {"id_tag": id_tag}).first()
        return None if row is None else _id_tag(row)

    def get_with_active_count(self, id_tag: str) -> tuple[IdTag | None, int]:
        rows = self._driver.id_tag_with_active_count.rows(self._c, {"id_tag": id_tag})
        if not rows:
            return None, 0
        row = rows[0]
        return _id_tag(row[:-1]), int(row[-1])

    def list_id_tags(self, *, limit: int = 1000, offset: int = 0) -> list[IdTag]:
        rows = self._c.execute(
            select(*ID_TAG_COLUMNS).order_by(_it.id_tag).limit(limit).offset(offset)
        )
        return [_id_tag(row) for row in rows]

    def add(self, tag: IdTag, now: datetime) -> None:
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(t.id_tags).values(
                        id_tag=tag.id_tag,
                        status=tag.status.value,
                        expiry_date=tag.expiry_date,
                        parent_id_tag=tag.parent_id_tag,
                        owner=tag.owner,
                        note=tag.note,
                        max_concurrent_transactions=tag.max_concurrent_transactions,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"id tag {tag.id_tag!r} exists already") from None

    def update(self, id_tag: str, now: datetime, **fields: Any) -> bool:
        if isinstance(fields.get("status"), AuthorizationStatus):
            fields["status"] = fields["status"].value
        result = self._c.execute(
            update(t.id_tags).where(_it.id_tag == id_tag).values(updated_at=now, **fields)
        )
        return bool(result.rowcount)

    def remove(self, id_tag: str) -> bool:
        result = self._c.execute(delete(t.id_tags).where(_it.id_tag == id_tag))
        return bool(result.rowcount)


# cluster: StartTransaction's rules hold across processes (PostgreSQL row locks).
_LOCK_FOR_START = select(
    select(_cp.id).where(_cp.id == bindparam("cp")).with_for_update().scalar_subquery(),
    select(_it.id_tag).where(_it.id_tag == bindparam("id_tag")).with_for_update().scalar_subquery(),
)


class SqlTransactions:
    __slots__ = ("_c", "_driver", "_sql")

    def __init__(self, connection: Connection, sql: HotSql, driver: _DriverReads) -> None:
        self._c = connection
        self._sql = sql
        self._driver = driver

    def lock_for_start(self, charge_point_id: str, id_tag: str) -> None:
        # cluster: both row locks in one round trip (kilowatt.cluster)
        if self._c.dialect.name == "sqlite":
            return
        self._driver.lock_for_start.rows(self._c, {"cp": charge_point_id, "id_tag": id_tag})

    def get(self, transaction_id: int) -> Transaction | None:
        rows = self._driver.transaction.rows(self._c, {"id": transaction_id})
        return _transaction(rows[0]) if rows else None

    def find_started(
        self,
        charge_point_id: str,
        connector_id: int,
        id_tag: str,
        started_at: datetime,
        meter_start: int,
    ) -> Transaction | None:
        row = self._c.execute(
            _FIND_STARTED,
            {
                "cp": charge_point_id,
                "connector": connector_id,
                "id_tag": id_tag,
                "started_at": started_at,
                "meter_start": meter_start,
            },
        ).first()
        return None if row is None else _transaction(row)

    def list_active(
        self, *, charge_point_id: str | None = None, connector_id: int | None = None
    ) -> list[Transaction]:
        query = _LIST_ACTIVE[charge_point_id is not None, connector_id is not None]
        rows = self._c.execute(query, {"cp": charge_point_id, "connector": connector_id})
        return [_transaction(row) for row in rows]

    def find_for_start(
        self,
        charge_point_id: str,
        connector_id: int,
        id_tag: str,
        started_at: datetime,
        meter_start: int,
    ) -> tuple[Transaction | None, list[Transaction]]:
        parameters = {
            "cp": charge_point_id,
            "connector": connector_id,
            "id_tag": id_tag,
            "started_at": started_at,
            "meter_start": meter_start,
        }
        rows = self._driver.find_for_start.rows(self._c, parameters)
        started: Transaction | None = None
        active: list[Transaction] = []
        for row in rows:
            if row[0]:
                started = _transaction(row[1:])
            else:
                active.append(_transaction(row[1:]))
        return started, active

    def count_active_for_tag(self, id_tag: str) -> int:
        return int(self._c.execute(_COUNT_ACTIVE_FOR_TAG, {"id_tag": id_tag}).scalar_one())

    def count_active(self) -> int:
        return int(self._c.execute(_COUNT_ACTIVE).scalar_one())

    def add(self, transaction: Transaction, now: datetime) -> int:
        to_datetime = self._sql.datetime
        created = to_datetime(now)
        result = self._c.exec_driver_sql(
            self._sql.insert_transaction,
            (
                transaction.charge_point_id,
                transaction.connector_id,
                transaction.id_tag,
                transaction.meter_start,
                to_datetime(transaction.started_at),
                transaction.reservation_id,
                transaction.start_status.value,
                transaction.state.value,
                json_text(transaction.flags),
                created,
                created,
            ),
        )
        return int(result.scalar_one() if self._sql.returning_id else result.lastrowid)

    def stop(
        self,
        transaction_id: int,
        *,
        state: TransactionState,
        meter_stop: int | None,
        stopped_at: datetime,
        reason: str | None,
        stop_id_tag: str | None,
        energy_wh: int | None,
        flags: Sequence[str],
        now: datetime,
    ) -> None:
        to_datetime = self._sql.datetime
        self._c.exec_driver_sql(
            self._sql.stop_transaction,
            (
                state.value,
                meter_stop,
                to_datetime(stopped_at),
                reason,
                stop_id_tag,
                energy_wh,
                json_text(flags),
                to_datetime(now),
                transaction_id,
            ),
        )

    def list_transactions(
        self,
        *,
        charge_point_id: str | None = None,
        id_tag: str | None = None,
        state: TransactionState | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Transaction]:
        query = select(*TRANSACTION_COLUMNS)
        if charge_point_id is not None:
            query = query.where(_tx.charge_point_id == charge_point_id)
        if id_tag is not None:
            query = query.where(_tx.id_tag == id_tag)
        if state is not None:
            query = query.where(_state_is(state))
        if since is not None:
            query = query.where(_tx.started_at >= since)
        if until is not None:
            query = query.where(_tx.started_at < until)
        query = query.order_by(_tx.id.desc()).limit(limit).offset(offset)
        return [_transaction(row) for row in self._c.execute(query)]

    def add_unknown_stop(self, stop: UnknownStop) -> bool:
        result = self._c.execute(
            _insert_ignoring_duplicates(self._c, t.unknown_stops).values(
                charge_point_id=stop.charge_point_id,
                transaction_id=stop.transaction_id,
                id_tag=stop.id_tag,
                meter_stop=stop.meter_stop,
                timestamp=stop.timestamp,
                reason=stop.reason,
                received_at=stop.received_at,
            )
        )
        return bool(result.rowcount)

    def list_unknown_stops(self, *, limit: int = 100) -> list[UnknownStop]:
        rows = self._c.execute(
            select(t.unknown_stops).order_by(t.unknown_stops.c.id.desc()).limit(limit)
        )
        return [
            UnknownStop(
                charge_point_id=row.charge_point_id,
                transaction_id=row.transaction_id,
                id_tag=row.id_tag,
                meter_stop=row.meter_stop,
                timestamp=row.timestamp,
                reason=row.reason,
                received_at=row.received_at,
            )
            for row in rows
        ]


class SqlMeterValues:
    __slots__ = ("_c", "_rows", "_sql")

    def __init__(self, connection: Connection, sql: HotSql, rows: _Appends) -> None:
        self._c = connection
        self._sql = sql
        self._rows = rows

    def add_many(self, samples: Sequence[MeterSample], received_at: datetime) -> None:
        # INSERT ... ON CONFLICT DO NOTHING: a retransmitted sample is skipped by the
        # unique index. No RETURNING: nobody needs the count, and deferred rows
        # (see _Appends) could not tell it anyway.
        to_datetime = self._sql.datetime
        received = to_datetime(received_at)
        rows = []
        # The samples of one meterValue share its timestamp: converted once.
        last: datetime | None = None
        when: Any = None
        for s in samples:
            if s.timestamp is not last:
                last = s.timestamp
                when = to_datetime(last)
            rows.append(
                (
                    s.charge_point_id,
                    s.connector_id,
                    s.transaction_id,
                    when,
                    s.measurand,
                    s.phase or "",
                    s.unit,
                    s.context,
                    s.location,
                    s.format,
                    s.raw_value,
                    None if s.value is None else float(s.value),
                    received,
                )
            )
        self._rows.add(rows)

    def list_for_transaction(self, transaction_id: int) -> list[MeterSample]:
        self._rows.flush()
        rows = self._c.execute(
            select(*METER_VALUE_COLUMNS)
            .where(_mv.transaction_id == transaction_id)
            .order_by(_mv.timestamp, _mv.id)
        )
        return [_sample(row) for row in rows]

    def list_for_charge_point(self, charge_point_id: str, *, limit: int = 100) -> list[MeterSample]:
        self._rows.flush()
        rows = self._c.execute(
            select(*METER_VALUE_COLUMNS)
            .where(_mv.charge_point_id == charge_point_id)
            .order_by(_mv.id.desc())
            .limit(limit)
        )
        return [_sample(row) for row in rows]


class SqlRepositories:
    """All repositories over one connection (one unit of work, or a group of them).

    With ``defer_appends`` the meter values and status history rows (and the
    connectors' current status) are collected
    and only inserted by :meth:`flush`, which the owner must call before it commits;
    the group commit uses it to insert a whole group's rows with one statement per
    table. Without it (the default) every row is inserted at once.
    """

    __slots__ = (
        "_appends",
        "api_tokens",
        "charge_points",
        "configuration",
        "connection",
        "id_tags",
        "meter_values",
        "transactions",
    )

    def __init__(self, connection: Connection, *, defer_appends: bool = False) -> None:
        self.connection = connection
        sql = hot_sql(connection.dialect)
        meter_rows = _Appends(
            connection, sql.insert_meter_values, sql.meter_values_many, deferred=defer_appends
        )
        status_rows = _Appends(
            connection, sql.insert_status, sql.status_many, deferred=defer_appends
        )
        # Executed one row at a time (an executemany), never as one multi-row
        # statement: a group may upsert the same connector twice.
        connector_rows = _Appends(connection, sql.upsert_connector, None, deferred=defer_appends)
        self._appends = (meter_rows, status_rows, connector_rows)
        self.api_tokens = SqlApiTokens(connection)
        self.charge_points = SqlChargePoints(connection, sql, status_rows, connector_rows)
        self.configuration = SqlConfiguration(connection)
        driver = driver_reads(connection.dialect)
        self.id_tags = SqlIdTags(connection, driver)
        self.transactions = SqlTransactions(connection, sql, driver)
        self.meter_values = SqlMeterValues(connection, sql, meter_rows)

    def flush(self) -> None:
        """Insert the deferred rows, in the current transaction."""
        for appends in self._appends:
            appends.flush()
