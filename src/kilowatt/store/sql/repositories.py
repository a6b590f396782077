"""SQL behind the repository interfaces of :mod:`kilowatt.store.base`.

Every method runs on the synchronous SQLAlchemy connection of the current unit of
work; :mod:`kilowatt.store.sql.database` decides on which thread or event loop that
connection lives, and when the transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, delete, func, insert, select, update
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

__all__ = ["SqlRepositories"]


def _insert_ignoring_duplicates(connection: Connection, table: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(connection.dialect.name)  # pragma: no cover


def _charge_point(row: Row[Any]) -> ChargePoint:
    m = row._mapping
    return ChargePoint(
        id=m["id"],
        registration=Registration(m["registration"]),
        description=m["description"],
        security_profile=m["security_profile"],
        password_hash=m["password_hash"],
        vendor=m["vendor"],
        model=m["model"],
        serial_number=m["serial_number"],
        charge_box_serial_number=m["charge_box_serial_number"],
        firmware_version=m["firmware_version"],
        iccid=m["iccid"],
        imsi=m["imsi"],
        meter_type=m["meter_type"],
        meter_serial_number=m["meter_serial_number"],
        last_boot_at=m["last_boot_at"],
        last_seen_at=m["last_seen_at"],
        connected=m["connected"],
        connected_since=m["connected_since"],
        remote_address=m["remote_address"],
        created_at=m["created_at"],
    )


def _connector(row: Row[Any]) -> Connector:
    m = row._mapping
    return Connector(
        charge_point_id=m["charge_point_id"],
        connector_id=m["connector_id"],
        status=m["status"],
        error_code=m["error_code"],
        info=m["info"],
        vendor_id=m["vendor_id"],
        vendor_error_code=m["vendor_error_code"],
        status_timestamp=m["status_timestamp"],
        updated_at=m["updated_at"],
    )


def _id_tag(row: Row[Any]) -> IdTag:
    m = row._mapping
    return IdTag(
        id_tag=m["id_tag"],
        status=AuthorizationStatus(m["status"]),
        expiry_date=m["expiry_date"],
        parent_id_tag=m["parent_id_tag"],
        owner=m["owner"],
        note=m["note"],
        max_concurrent_transactions=m["max_concurrent_transactions"],
        created_at=m["created_at"],
    )


def _transaction(row: Row[Any]) -> Transaction:
    m = row._mapping
    return Transaction(
        id=m["id"],
        charge_point_id=m["charge_point_id"],
        connector_id=m["connector_id"],
        id_tag=m["id_tag"],
        meter_start=m["meter_start"],
        started_at=m["started_at"],
        state=TransactionState(m["state"]),
        start_status=AuthorizationStatus(m["start_status"]),
        reservation_id=m["reservation_id"],
        meter_stop=m["meter_stop"],
        stopped_at=m["stopped_at"],
        stop_reason=m["stop_reason"],
        stop_id_tag=m["stop_id_tag"],
        energy_wh=m["energy_wh"],
        flags=tuple(m["flags"] or ()),
        created_at=m["created_at"],
    )


def _sample(row: Row[Any]) -> MeterSample:
    m = row._mapping
    return MeterSample(
        charge_point_id=m["charge_point_id"],
        connector_id=m["connector_id"],
        transaction_id=m["transaction_id"],
        timestamp=m["timestamp"],
        raw_value=m["raw_value"],
        value=parse_value(m["raw_value"]),
        measurand=m["measurand"],
        unit=m["unit"],
        context=m["context"],
        location=m["location"],
        format=m["format"],
        phase=m["phase"] or None,
    )


class SqlChargePoints:
    __slots__ = ("_c",)

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def get(self, charge_point_id: str) -> ChargePoint | None:
        row = self._c.execute(
            select(t.charge_points).where(t.charge_points.c.id == charge_point_id)
        ).first()
        return None if row is None else _charge_point(row)

    def list_charge_points(self) -> list[ChargePoint]:
        points = [
            _charge_point(row)
            for row in self._c.execute(select(t.charge_points).order_by(t.charge_points.c.id))
        ]
        by_id = {point.id: point for point in points}
        rows = self._c.execute(
            select(t.connectors).order_by(
                t.connectors.c.charge_point_id, t.connectors.c.connector_id
            )
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
            .where(t.charge_points.c.id == charge_point_id)
            .values(updated_at=now, **fields)
        )
        return bool(result.rowcount)

    def remove(self, charge_point_id: str) -> bool:
        self._c.execute(
            delete(t.connectors).where(t.connectors.c.charge_point_id == charge_point_id)
        )
        result = self._c.execute(
            delete(t.charge_points).where(t.charge_points.c.id == charge_point_id)
        )
        return bool(result.rowcount)

    def record_boot(self, charge_point_id: str, boot: BootInfo, now: datetime) -> None:
        self._c.execute(
            update(t.charge_points)
            .where(t.charge_points.c.id == charge_point_id)
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
        self._c.execute(
            update(t.charge_points).where(t.charge_points.c.id == charge_point_id).values(**values)
        )

    def touch(self, seen: Sequence[tuple[str, datetime]]) -> None:
        if not seen:
            return
        self._c.execute(
            update(t.charge_points)
            .where(t.charge_points.c.id == bindparam("cp"))
            .values(last_seen_at=bindparam("seen")),
            [{"cp": cp, "seen": at} for cp, at in seen],
        )

    def mark_all_disconnected(self, now: datetime) -> None:
        self._c.execute(
            update(t.charge_points)
            .where(t.charge_points.c.connected.is_(True))
            .values(connected=False, connected_since=None, updated_at=now)
        )

    def get_connector(self, charge_point_id: str, connector_id: int) -> Connector | None:
        row = self._c.execute(
            select(t.connectors).where(
                and_(
                    t.connectors.c.charge_point_id == charge_point_id,
                    t.connectors.c.connector_id == connector_id,
                )
            )
        ).first()
        return None if row is None else _connector(row)

    def list_connectors(self, charge_point_id: str) -> list[Connector]:
        rows = self._c.execute(
            select(t.connectors)
            .where(t.connectors.c.charge_point_id == charge_point_id)
            .order_by(t.connectors.c.connector_id)
        )
        return [_connector(row) for row in rows]

    def update_connector(self, connector: Connector) -> None:
        values = {
            "status": connector.status,
            "error_code": connector.error_code,
            "info": connector.info,
            "vendor_id": connector.vendor_id,
            "vendor_error_code": connector.vendor_error_code,
            "status_timestamp": connector.status_timestamp,
            "updated_at": connector.updated_at,
        }
        result = self._c.execute(
            update(t.connectors)
            .where(
                and_(
                    t.connectors.c.charge_point_id == connector.charge_point_id,
                    t.connectors.c.connector_id == connector.connector_id,
                )
            )
            .values(**values)
        )
        if not result.rowcount:
            self._c.execute(
                insert(t.connectors).values(
                    charge_point_id=connector.charge_point_id,
                    connector_id=connector.connector_id,
                    **values,
                )
            )

    def add_status(self, record: StatusRecord) -> None:
        self._c.execute(
            insert(t.status_history).values(
                charge_point_id=record.charge_point_id,
                connector_id=record.connector_id,
                status=record.status,
                error_code=record.error_code,
                info=record.info,
                vendor_id=record.vendor_id,
                vendor_error_code=record.vendor_error_code,
                timestamp=record.timestamp,
                received_at=record.received_at,
            )
        )

    def list_status_history(
        self, charge_point_id: str, *, connector_id: int | None = None, limit: int = 100
    ) -> list[StatusRecord]:
        query = select(t.status_history).where(
            t.status_history.c.charge_point_id == charge_point_id
        )
        if connector_id is not None:
            query = query.where(t.status_history.c.connector_id == connector_id)
        query = query.order_by(t.status_history.c.id.desc()).limit(limit)
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
    __slots__ = ("_c",)

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def get(self, id_tag: str) -> IdTag | None:
        row = self._c.execute(select(t.id_tags).where(t.id_tags.c.id_tag == id_tag)).first()
        return None if row is None else _id_tag(row)

    def list_id_tags(self, *, limit: int = 1000, offset: int = 0) -> list[IdTag]:
        rows = self._c.execute(
            select(t.id_tags).order_by(t.id_tags.c.id_tag).limit(limit).offset(offset)
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
            update(t.id_tags).where(t.id_tags.c.id_tag == id_tag).values(updated_at=now, **fields)
        )
        return bool(result.rowcount)

    def remove(self, id_tag: str) -> bool:
        result = self._c.execute(delete(t.id_tags).where(t.id_tags.c.id_tag == id_tag))
        return bool(result.rowcount)


class SqlTransactions:
    __slots__ = ("_c",)

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def get(self, transaction_id: int) -> Transaction | None:
        row = self._c.execute(
            select(t.transactions).where(t.transactions.c.id == transaction_id)
        ).first()
        return None if row is None else _transaction(row)

    def find_started(
        self,
        charge_point_id: str,
        connector_id: int,
        id_tag: str,
        started_at: datetime,
        meter_start: int,
    ) -> Transaction | None:
        c = t.transactions.c
        row = self._c.execute(
            select(t.transactions).where(
                and_(
                    c.charge_point_id == charge_point_id,
                    c.connector_id == connector_id,
                    c.id_tag == id_tag,
                    c.started_at == started_at,
                    c.meter_start == meter_start,
                )
            )
        ).first()
        return None if row is None else _transaction(row)

    def list_active(
        self, *, charge_point_id: str | None = None, connector_id: int | None = None
    ) -> list[Transaction]:
        c = t.transactions.c
        query = select(t.transactions).where(c.state == TransactionState.ACTIVE.value)
        if charge_point_id is not None:
            query = query.where(c.charge_point_id == charge_point_id)
        if connector_id is not None:
            query = query.where(c.connector_id == connector_id)
        return [_transaction(row) for row in self._c.execute(query.order_by(c.id))]

    def count_active_for_tag(self, id_tag: str) -> int:
        c = t.transactions.c
        return int(
            self._c.execute(
                select(func.count())
                .select_from(t.transactions)
                .where(and_(c.id_tag == id_tag, c.state == TransactionState.ACTIVE.value))
            ).scalar_one()
        )

    def add(self, transaction: Transaction, now: datetime) -> int:
        result = self._c.execute(
            insert(t.transactions)
            .values(
                charge_point_id=transaction.charge_point_id,
                connector_id=transaction.connector_id,
                id_tag=transaction.id_tag,
                meter_start=transaction.meter_start,
                started_at=transaction.started_at,
                reservation_id=transaction.reservation_id,
                start_status=transaction.start_status.value,
                state=transaction.state.value,
                flags=list(transaction.flags),
                created_at=now,
                updated_at=now,
            )
            .returning(t.transactions.c.id)
        )
        return int(result.scalar_one())

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
        self._c.execute(
            update(t.transactions)
            .where(t.transactions.c.id == transaction_id)
            .values(
                state=state.value,
                meter_stop=meter_stop,
                stopped_at=stopped_at,
                stop_reason=reason,
                stop_id_tag=stop_id_tag,
                energy_wh=energy_wh,
                flags=list(flags),
                updated_at=now,
            )
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
        c = t.transactions.c
        query = select(t.transactions)
        if charge_point_id is not None:
            query = query.where(c.charge_point_id == charge_point_id)
        if id_tag is not None:
            query = query.where(c.id_tag == id_tag)
        if state is not None:
            query = query.where(c.state == state.value)
        if since is not None:
            query = query.where(c.started_at >= since)
        if until is not None:
            query = query.where(c.started_at < until)
        query = query.order_by(c.id.desc()).limit(limit).offset(offset)
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
    __slots__ = ("_c",)

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add_many(self, samples: Sequence[MeterSample], received_at: datetime) -> int:
        if not samples:
            return 0
        rows = [
            {
                "charge_point_id": s.charge_point_id,
                "connector_id": s.connector_id,
                "transaction_id": s.transaction_id,
                "timestamp": s.timestamp,
                "measurand": s.measurand,
                "phase": s.phase or "",
                "unit": s.unit,
                "context": s.context,
                "location": s.location,
                "format": s.format,
                "raw_value": s.raw_value,
                "value": float(s.value) if s.value is not None else None,
                "received_at": received_at,
            }
            for s in samples
        ]
        # RETURNING counts what was new on every driver (asyncpg reports no rowcount
        # for executemany).
        result = self._c.execute(
            _insert_ignoring_duplicates(self._c, t.meter_values).returning(t.meter_values.c.id),
            rows,
        )
        return len(result.all())

    def list_for_transaction(self, transaction_id: int) -> list[MeterSample]:
        rows = self._c.execute(
            select(t.meter_values)
            .where(t.meter_values.c.transaction_id == transaction_id)
            .order_by(t.meter_values.c.timestamp, t.meter_values.c.id)
        )
        return [_sample(row) for row in rows]

    def list_for_charge_point(self, charge_point_id: str, *, limit: int = 100) -> list[MeterSample]:
        rows = self._c.execute(
            select(t.meter_values)
            .where(t.meter_values.c.charge_point_id == charge_point_id)
            .order_by(t.meter_values.c.id.desc())
            .limit(limit)
        )
        return [_sample(row) for row in rows]


class SqlRepositories:
    """All repositories over one connection (one unit of work)."""

    __slots__ = ("api_tokens", "charge_points", "id_tags", "meter_values", "transactions")

    def __init__(self, connection: Connection) -> None:
        self.api_tokens = SqlApiTokens(connection)
        self.charge_points = SqlChargePoints(connection)
        self.id_tags = SqlIdTags(connection)
        self.transactions = SqlTransactions(connection)
        self.meter_values = SqlMeterValues(connection)
