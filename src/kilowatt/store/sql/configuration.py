"""SQL behind :class:`kilowatt.store.base.ConfigurationRepository`.

Administrative, low-volume queries (a GetConfiguration answer, an operator's
change): statements are built per call. Upserts use ``INSERT … ON CONFLICT DO
UPDATE``, which SQLite and PostgreSQL both have.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from kilowatt.domain.configuration import (
    ChangeRecord,
    ConfigurationTemplate,
    ReportedKey,
    SyncState,
)
from kilowatt.store.base import AlreadyExists
from kilowatt.store.sql import tables as t

__all__ = ["SqlConfiguration"]

_rep = t.configuration_reported.c
_des = t.configuration_desired.c
_tpl = t.configuration_templates.c
_val = t.configuration_template_values.c
_mem = t.configuration_template_members.c
_chg = t.configuration_changes.c
_syn = t.configuration_sync.c


def _upsert(
    connection: Connection, table: Table, keys: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    """Insert ``rows``, or update every other column of the row with the same ``keys``."""
    if not rows:
        return
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:  # pragma: no cover
        raise NotImplementedError(dialect)
    columns = [name for name in rows[0] if name not in keys]
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: statement.excluded[name] for name in columns},
    )
    connection.execute(statement, rows)


def _reported(row: Row[Any]) -> ReportedKey:
    m = row._mapping
    return ReportedKey(
        key=m["key"],
        value=m["value"],
        readonly=m["readonly"],
        reported_at=m["reported_at"],
        unknown=m["unknown"],
    )


def _change(row: Row[Any]) -> ChangeRecord:
    m = row._mapping
    return ChangeRecord(
        id=int(m["id"]),
        charge_point_id=m["charge_point_id"],
        key=m["key"],
        value=m["value"],
        secret=m["secret"],
        origin=m["origin"],
        requested_at=m["requested_at"],
        status=m["status"],
        error=m["error"],
        answered_at=m["answered_at"],
    )


class SqlConfiguration:
    __slots__ = ("_c",)

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    # ------------------------------------------------------------ reported

    def list_reported(self, charge_point_id: str) -> list[ReportedKey]:
        rows = self._c.execute(
            select(t.configuration_reported)
            .where(_rep.charge_point_id == charge_point_id)
            .order_by(_rep.key)
        )
        return [_reported(row) for row in rows]

    def record_report(
        self,
        charge_point_id: str,
        keys: Sequence[ReportedKey],
        unknown: Sequence[str],
        now: datetime,
        *,
        complete: bool,
    ) -> None:
        if complete:
            self._c.execute(
                delete(t.configuration_reported).where(_rep.charge_point_id == charge_point_id)
            )
        rows = [
            {
                "charge_point_id": charge_point_id,
                "key": entry.key,
                "value": entry.value,
                "readonly": entry.readonly,
                "unknown": False,
                "reported_at": entry.reported_at,
            }
            for entry in keys
        ]
        rows.extend(
            {
                "charge_point_id": charge_point_id,
                "key": key,
                "value": None,
                "readonly": None,
                "unknown": True,
                "reported_at": now,
            }
            for key in unknown
        )
        _upsert(self._c, t.configuration_reported, ("charge_point_id", "key"), rows)
        # A successful answer clears the last error; only a complete one is a sync.
        sync: dict[str, Any] = {"charge_point_id": charge_point_id, "error": None, "error_at": None}
        if complete:
            sync["synced_at"] = now
        _upsert(self._c, t.configuration_sync, ("charge_point_id",), [sync])

    def set_reported_value(self, charge_point_id: str, key: str, value: str, now: datetime) -> None:
        row = {
            "charge_point_id": charge_point_id,
            "key": key,
            "value": value,
            "readonly": False,  # it accepted a value for it
            "unknown": False,
            "reported_at": now,
        }
        _upsert(self._c, t.configuration_reported, ("charge_point_id", "key"), [row])

    # ---------------------------------------------------------------- sync

    def get_sync(self, charge_point_id: str) -> SyncState | None:
        row = self._c.execute(
            select(t.configuration_sync).where(_syn.charge_point_id == charge_point_id)
        ).first()
        if row is None:
            return None
        m = row._mapping
        return SyncState(
            charge_point_id=charge_point_id,
            synced_at=m["synced_at"],
            error=m["error"],
            error_at=m["error_at"],
        )

    def set_sync_error(self, charge_point_id: str, error: str, now: datetime) -> None:
        _upsert(
            self._c,
            t.configuration_sync,
            ("charge_point_id",),
            [{"charge_point_id": charge_point_id, "error": error, "error_at": now}],
        )

    # ------------------------------------------------------------- desired

    def list_desired(self, charge_point_id: str) -> dict[str, str]:
        rows = self._c.execute(
            select(_des.key, _des.value)
            .where(_des.charge_point_id == charge_point_id)
            .order_by(_des.key)
        )
        return {key: value for key, value in rows}

    def set_desired(self, charge_point_id: str, key: str, value: str, now: datetime) -> None:
        _upsert(
            self._c,
            t.configuration_desired,
            ("charge_point_id", "key"),
            [{"charge_point_id": charge_point_id, "key": key, "value": value, "updated_at": now}],
        )

    def remove_desired(self, charge_point_id: str, key: str) -> bool:
        result = self._c.execute(
            delete(t.configuration_desired).where(
                _des.charge_point_id == charge_point_id, _des.key == key
            )
        )
        return bool(result.rowcount)

    # ----------------------------------------------------------- templates

    def add_template(self, name: str, description: str | None, now: datetime) -> None:
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(t.configuration_templates).values(
                        name=name, description=description, created_at=now, updated_at=now
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a configuration template named {name!r} exists already") from None

    def _values(self, names: Sequence[str] | None) -> dict[str, dict[str, str]]:
        statement = select(_val.template, _val.key, _val.value).order_by(_val.template, _val.key)
        if names is not None:
            statement = statement.where(_val.template.in_(names))
        values: dict[str, dict[str, str]] = {}
        for template, key, value in self._c.execute(statement):
            values.setdefault(template, {})[key] = value
        return values

    def _members(self, names: Sequence[str] | None) -> dict[str, list[str]]:
        statement = select(_mem.template, _mem.charge_point_id).order_by(
            _mem.template, _mem.charge_point_id
        )
        if names is not None:
            statement = statement.where(_mem.template.in_(names))
        members: dict[str, list[str]] = {}
        for template, charge_point_id in self._c.execute(statement):
            members.setdefault(template, []).append(charge_point_id)
        return members

    def _templates(self, names: Sequence[str] | None) -> list[ConfigurationTemplate]:
        statement = select(t.configuration_templates).order_by(_tpl.name)
        if names is not None:
            statement = statement.where(_tpl.name.in_(names))
        rows = list(self._c.execute(statement))
        values = self._values(names)
        members = self._members(names)
        return [
            ConfigurationTemplate(
                name=row.name,
                description=row.description,
                values=values.get(row.name, {}),
                members=tuple(members.get(row.name, ())),
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in rows
        ]

    def get_template(self, name: str) -> ConfigurationTemplate | None:
        found = self._templates([name])
        return found[0] if found else None

    def template_values(self, name: str) -> dict[str, str]:
        return self._values([name]).get(name, {})

    def list_templates(self) -> list[ConfigurationTemplate]:
        return self._templates(None)

    def remove_template(self, name: str) -> bool:
        result = self._c.execute(delete(t.configuration_templates).where(_tpl.name == name))
        return bool(result.rowcount)

    def set_template_value(self, name: str, key: str, value: str, now: datetime) -> bool:
        touched = self._c.execute(
            update(t.configuration_templates).where(_tpl.name == name).values(updated_at=now)
        )
        if not touched.rowcount:
            return False
        _upsert(
            self._c,
            t.configuration_template_values,
            ("template", "key"),
            [{"template": name, "key": key, "value": value, "updated_at": now}],
        )
        return True

    def remove_template_value(self, name: str, key: str) -> bool:
        result = self._c.execute(
            delete(t.configuration_template_values).where(_val.template == name, _val.key == key)
        )
        return bool(result.rowcount)

    def assign_template(self, charge_point_id: str, name: str | None, now: datetime) -> None:
        if name is None:
            self._c.execute(
                delete(t.configuration_template_members).where(
                    _mem.charge_point_id == charge_point_id
                )
            )
            return
        _upsert(
            self._c,
            t.configuration_template_members,
            ("charge_point_id",),
            [{"charge_point_id": charge_point_id, "template": name, "assigned_at": now}],
        )

    def template_of(self, charge_point_id: str) -> str | None:
        name: str | None = self._c.execute(
            select(_mem.template).where(_mem.charge_point_id == charge_point_id)
        ).scalar_one_or_none()
        return name

    # ------------------------------------------------------------- changes

    def add_change(self, change: ChangeRecord) -> int:
        change_id = self._c.execute(
            insert(t.configuration_changes)
            .values(
                charge_point_id=change.charge_point_id,
                key=change.key,
                value=None if change.secret else change.value,
                secret=change.secret,
                origin=change.origin,
                status=change.status,
                error=change.error,
                requested_at=change.requested_at,
                answered_at=change.answered_at,
            )
            .returning(_chg.id)
        ).scalar_one()
        return int(change_id)

    def list_changes(
        self, charge_point_id: str, *, key: str | None = None, limit: int = 100
    ) -> list[ChangeRecord]:
        statement = select(t.configuration_changes).where(_chg.charge_point_id == charge_point_id)
        if key is not None:
            statement = statement.where(_chg.key == key)
        rows = self._c.execute(statement.order_by(_chg.id.desc()).limit(limit))
        return [_change(row) for row in rows]

    def latest_changes(self, charge_point_id: str) -> list[ChangeRecord]:
        latest = (
            select(func.max(_chg.id))
            .where(_chg.charge_point_id == charge_point_id)
            .group_by(_chg.key)
        )
        rows = self._c.execute(
            select(t.configuration_changes).where(_chg.id.in_(latest)).order_by(_chg.key)
        )
        return [_change(row) for row in rows]
