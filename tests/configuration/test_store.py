"""The configuration repository on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kilowatt.domain.configuration import ChangeRecord, ReportedKey
from kilowatt.domain.models import ChargePoint, Registration
from kilowatt.store.base import AlreadyExists, Repositories
from kilowatt.store.sql import tables as t
from kilowatt.store.sql.database import SqlStore

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)


async def add_charge_point(store: SqlStore, charge_point_id: str = "CP1") -> None:
    point = ChargePoint(id=charge_point_id, registration=Registration.ACCEPTED)
    await store.write(lambda repos: repos.charge_points.add(point, T0))


def key(name: str, value: str | None, readonly: bool = False, at: datetime = T0) -> ReportedKey:
    return ReportedKey(name, value, readonly, at)


async def test_reports_complete_and_partial(store: SqlStore) -> None:
    await add_charge_point(store)
    await store.write(
        lambda repos: repos.configuration.record_report(
            "CP1",
            [key("HeartbeatInterval", "300"), key("NumberOfConnectors", "2", True)],
            [],
            T0,
            complete=True,
        )
    )
    sync = await store.read(lambda repos: repos.configuration.get_sync("CP1"))
    assert sync is not None and sync.synced_at == T0 and sync.error is None

    # A partial answer updates what it names and marks unknown keys; the rest stays.
    await store.write(
        lambda repos: repos.configuration.record_report(
            "CP1", [key("HeartbeatInterval", "600", at=T1)], ["Nope"], T1, complete=False
        )
    )
    rows = await store.read(lambda repos: repos.configuration.list_reported("CP1"))
    assert rows == [
        key("HeartbeatInterval", "600", at=T1),
        ReportedKey("Nope", None, None, T1, unknown=True),
        key("NumberOfConnectors", "2", True),
    ]
    sync = await store.read(lambda repos: repos.configuration.get_sync("CP1"))
    assert sync is not None and sync.synced_at == T0  # only a complete answer is a sync

    # A complete answer replaces everything.
    await store.write(
        lambda repos: repos.configuration.record_report(
            "CP1", [key("MeterValueSampleInterval", None, at=T2)], [], T2, complete=True
        )
    )
    rows = await store.read(lambda repos: repos.configuration.list_reported("CP1"))
    assert rows == [key("MeterValueSampleInterval", None, at=T2)]

    await store.write(lambda repos: repos.configuration.set_reported_value("CP1", "X", "1", T2))
    await store.write(lambda repos: repos.configuration.set_sync_error("CP1", "timeout", T2))
    rows = await store.read(lambda repos: repos.configuration.list_reported("CP1"))
    assert key("X", "1", at=T2) in rows
    sync = await store.read(lambda repos: repos.configuration.get_sync("CP1"))
    assert sync is not None
    assert (sync.synced_at, sync.error, sync.error_at) == (T2, "timeout", T2)


async def test_sync_error_before_any_report(store: SqlStore) -> None:
    await add_charge_point(store)
    await store.write(lambda repos: repos.configuration.set_sync_error("CP1", "CALLERROR", T0))
    sync = await store.read(lambda repos: repos.configuration.get_sync("CP1"))
    assert sync is not None and sync.synced_at is None and sync.error == "CALLERROR"
    assert await store.read(lambda repos: repos.configuration.get_sync("CP2")) is None


async def test_desired_values_and_templates(store: SqlStore) -> None:
    await add_charge_point(store, "CP1")
    await add_charge_point(store, "CP2")

    def setup(repos: Repositories) -> None:
        config = repos.configuration
        config.set_desired("CP1", "HeartbeatInterval", "60", T0)
        config.set_desired("CP1", "HeartbeatInterval", "90", T1)  # an upsert
        config.set_desired("CP1", "VendorMode", "eco", T0)
        config.add_template("fleet", "all of them", T0)
        assert config.set_template_value("fleet", "MeterValueSampleInterval", "30", T1)
        assert not config.set_template_value("nope", "MeterValueSampleInterval", "30", T1)
        config.assign_template("CP1", "fleet", T1)
        config.assign_template("CP2", "fleet", T1)

    await store.write(setup)
    assert await store.read(lambda repos: repos.configuration.list_desired("CP1")) == {
        "HeartbeatInterval": "90",
        "VendorMode": "eco",
    }
    template = await store.read(lambda repos: repos.configuration.get_template("fleet"))
    assert template is not None
    assert template.values == {"MeterValueSampleInterval": "30"}
    assert template.members == ("CP1", "CP2")
    values = await store.read(lambda repos: repos.configuration.template_values("fleet"))
    assert values == {"MeterValueSampleInterval": "30"}
    assert await store.read(lambda repos: repos.configuration.template_values("nope")) == {}
    assert template.description == "all of them" and template.updated_at == T1
    assert await store.read(lambda repos: repos.configuration.template_of("CP2")) == "fleet"
    with pytest.raises(AlreadyExists):
        await store.write(lambda repos: repos.configuration.add_template("fleet", None, T2))

    assert await store.write(lambda repos: repos.configuration.remove_desired("CP1", "VendorMode"))
    assert not await store.write(lambda repos: repos.configuration.remove_desired("CP1", "X"))
    await store.write(lambda repos: repos.configuration.assign_template("CP2", None, T2))
    assert await store.read(lambda repos: repos.configuration.template_of("CP2")) is None
    assert await store.write(
        lambda repos: repos.configuration.remove_template_value("fleet", "MeterValueSampleInterval")
    )
    # Deleting a template takes its values and assignments with it.
    assert await store.write(lambda repos: repos.configuration.remove_template("fleet"))
    assert await store.read(lambda repos: repos.configuration.template_of("CP1")) is None
    assert await store.read(lambda repos: repos.configuration.list_templates()) == []


async def test_changes_and_latest_per_key(store: SqlStore) -> None:
    await add_charge_point(store)

    def change(name: str, value: str, status: str | None, at: datetime) -> ChangeRecord:
        return ChangeRecord("CP1", name, value, False, "api", at, status, None, at)

    def work(repos: Repositories) -> list[int]:
        config = repos.configuration
        return [
            config.add_change(change("HeartbeatInterval", "60", "Rejected", T0)),
            config.add_change(change("HeartbeatInterval", "90", "Accepted", T1)),
            config.add_change(change("ConnectionTimeOut", "30", "RebootRequired", T1)),
            # A write-only value is never stored, whatever the caller passes.
            config.add_change(
                ChangeRecord("CP1", "AuthorizationKey", "00ff" * 8, True, "api", T2, "Accepted")
            ),
        ]

    ids = await store.write(work)
    assert ids == sorted(ids)
    latest = await store.read(lambda repos: repos.configuration.latest_changes("CP1"))
    assert [(c.key, c.value, c.status) for c in latest] == [
        ("AuthorizationKey", None, "Accepted"),
        ("ConnectionTimeOut", "30", "RebootRequired"),
        ("HeartbeatInterval", "90", "Accepted"),
    ]
    assert latest[0].secret and latest[0].requested_at == T2
    history = await store.read(
        lambda repos: repos.configuration.list_changes("CP1", key="HeartbeatInterval")
    )
    assert [c.status for c in history] == ["Accepted", "Rejected"]
    assert (
        len(await store.read(lambda repos: repos.configuration.list_changes("CP1", limit=2))) == 2
    )
    stored = await store.run_sync_admin(
        lambda connection: connection.execute(t.configuration_changes.select()).all()
    )
    assert not any("00ff" in str(row) for row in stored)


async def test_everything_goes_with_the_charge_point(store: SqlStore) -> None:
    await add_charge_point(store)

    def setup(repos: Repositories) -> None:
        config = repos.configuration
        config.record_report("CP1", [key("HeartbeatInterval", "300")], ["X"], T0, complete=False)
        config.set_desired("CP1", "HeartbeatInterval", "60", T0)
        config.add_template("fleet", None, T0)
        config.assign_template("CP1", "fleet", T0)
        config.add_change(ChangeRecord("CP1", "HeartbeatInterval", "60", False, "api", T0))

    await store.write(setup)
    assert await store.write(lambda repos: repos.charge_points.remove("CP1"))
    for table in (
        t.configuration_reported,
        t.configuration_sync,
        t.configuration_desired,
        t.configuration_template_members,
        t.configuration_changes,
    ):
        rows = await store.run_sync_admin(
            lambda connection, table=table: connection.execute(table.select()).all()
        )
        assert rows == [], table.name
    template = await store.read(lambda repos: repos.configuration.get_template("fleet"))
    assert template is not None and template.members == ()
