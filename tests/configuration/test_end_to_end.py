"""Configuration management end to end: a real Kilowatt, the REST API over HTTP, and an
``ocpp`` charge point holding its own key table."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from ocpp.v16 import call

from kilowatt.app import Application
from kilowatt.store.sql import tables as t
from tests.configuration.charge_point import Entry, standard_table
from tests.configuration.conftest import (
    StartApp,
    assert_error,
    boot_notification,
    bounded,
    charge_point,
    eventually,
    synced,
)

SECRET = "0123456789abcdef0123456789ABCDEF01234567"  # 20 bytes, 40 hex digits


def by_key(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["key"]: item for item in items}


async def configuration(api: httpx.AsyncClient, charge_point_id: str = "CP1") -> dict[str, Any]:
    response = await api.get(f"/api/v1/charge-points/{charge_point_id}/configuration")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def put(
    api: httpx.AsyncClient, key: str, value: Any, charge_point_id: str = "CP1", **params: str
) -> httpx.Response:
    return await api.put(
        f"/api/v1/charge-points/{charge_point_id}/configuration/{key}",
        json={"value": value},
        params=params,
    )


# ------------------------------------------------------------- sync after boot


async def test_configuration_is_fetched_after_an_accepted_boot(
    app: Application, api: httpx.AsyncClient
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        # Exactly one GetConfiguration, for every key, and only after the
        # BootNotification answer had crossed the socket.
        assert cp.actions("GetConfiguration") == [{"key": None}]
        frames = cp.wire.frames
        boot_answer = next(
            i for i, (way, frame) in enumerate(frames) if way == "in" and frame[0] == 3
        )
        get_call = next(
            i
            for i, (way, frame) in enumerate(frames)
            if way == "in" and frame[0] == 2 and frame[2] == "GetConfiguration"
        )
        assert boot_answer < get_call

        body = await configuration(api)
        reported = by_key(body["reported"])
        assert reported["HeartbeatInterval"]["value"] == "300"
        assert reported["HeartbeatInterval"]["readonly"] is False
        assert reported["HeartbeatInterval"]["profile"] == "Core"
        assert reported["NumberOfConnectors"]["readonly"] is True
        assert reported["VendorMode"] == {
            **reported["VendorMode"],
            "value": "eco",
            "profile": None,
            "type": "string",
        }
        assert "AuthorizationKey" not in reported  # write-only: never listed
        assert body["synced_at"] is not None and body["sync_error"] is None
        assert body["capabilities"]["supported_feature_profiles"] == [
            "Core",
            "LocalAuthListManagement",
            "SmartCharging",
        ]
        assert body["capabilities"]["send_local_list_max_length"] == 50
        assert body["capabilities"]["charge_profile_max_stack_level"] == 8
        assert body["capabilities"]["reserve_connector_zero_supported"] is None

        # What other features read from the store.
        capabilities = await app.services.configuration.capabilities("CP1")
        assert capabilities.supports("SmartCharging") is True
        assert capabilities.supports("Reservation") is False
        assert capabilities.heartbeat_interval == 300
        assert capabilities.meter_value_sample_interval == 60


async def test_no_call_after_boot_when_sync_is_off(start_app: StartApp) -> None:
    app = await start_app(configuration_sync_on_boot=False)
    async with charge_point(app) as cp:
        # A round trip after the boot, and time for a background task to act.
        await bounded(cp.call(call.Heartbeat()))
        await asyncio.sleep(0.3)
        assert cp.wire.calls_in() == []
        view = await app.services.configuration.view("CP1")
        assert view.reported == [] and view.sync is None


async def test_no_sync_for_a_pending_boot(start_app: StartApp) -> None:
    app = await start_app(boot_policy="pending-unknown")
    async with charge_point(app, "NEW1", register=False) as cp:
        answer = await boot_notification(cp)
        assert answer.status == "Pending"
        await asyncio.sleep(0.3)
        assert cp.wire.calls_in() == []


async def test_a_failed_sync_is_recorded_and_the_boot_still_answered(
    start_app: StartApp,
) -> None:
    app = await start_app(call_timeout=0.3)
    async with charge_point(app, boot=False) as cp:
        cp.stall.add("GetConfiguration")
        # The boot answer does not wait for the configuration.
        answer = await bounded(boot_notification(cp), timeout=1.0)
        assert answer.status == "Accepted"

        async def failed() -> bool:
            view = await app.services.configuration.view("CP1")
            return view.sync is not None and view.sync.error is not None

        async with asyncio.timeout(5):
            while not await failed():
                await asyncio.sleep(0.02)
        view = await app.services.configuration.view("CP1")
        assert view.sync is not None and "no answer in time" in (view.sync.error or "")


# ------------------------------------------------------- changes, refusals


async def test_read_only_keys_are_refused_before_sending(
    app: Application, api: httpx.AsyncClient
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        error = assert_error(await put(api, "NumberOfConnectors", "4"), 409, "read_only")
        assert error["details"]["key"] == "NumberOfConnectors"
        assert "§9.1" in error["details"]["reference"]
        # Read-only because this charge point says so (R or RW in §9.1) ...
        assert_error(await put(api, "AuthorizeRemoteTxRequests", "true"), 409, "read_only")
        # ... and a vendor key it reports read-only.
        assert_error(await put(api, "VendorSerial", "other"), 409, "read_only")
        # The generic calls endpoint is checked the same way.
        response = await api.post(
            "/api/v1/charge-points/CP1/calls/ChangeConfiguration",
            json={"key": "NumberOfConnectors", "value": "4"},
        )
        assert_error(response, 409, "read_only")
        assert cp.actions("ChangeConfiguration") == []


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("HeartbeatInterval", "often", "whole number"),
        ("HeartbeatInterval", "-5", "at least 0"),
        ("LightIntensity", "101", "at most 100"),
        ("LocalAuthListEnabled", "yes", "true or false"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Banana", "measurand"),
        ("MeterValuesSampledData", "Voltage,Current.Import,Power.Active.Import,SoC", "at most 3"),
        ("ConnectorPhaseRotation", "1.RST,2.XYZ", "phase rotation"),
    ],
)
async def test_type_and_range_errors(
    app: Application, api: httpx.AsyncClient, key: str, value: str, reason: str
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        error = assert_error(await put(api, key, value), 422, "invalid_value")
        assert reason in error["message"], error
        assert error["details"]["key"] == key
        assert cp.actions("ChangeConfiguration") == []


async def test_value_must_be_a_string(app: Application, api: httpx.AsyncClient) -> None:
    async with charge_point(app):
        assert_error(await put(api, "HeartbeatInterval", 600), 422, "validation_error")


async def test_accepted_change_is_sent_normalized_and_recorded(
    app: Application, api: httpx.AsyncClient
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        response = await put(api, "LocalAuthListEnabled", "FALSE")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "key": "LocalAuthListEnabled",
            "value": "false",
            "secret": False,
            "status": "Accepted",
            "error": None,
            "reset": None,
        }
        assert cp.actions("ChangeConfiguration") == [
            {"key": "LocalAuthListEnabled", "value": "false"}
        ]
        body = await configuration(api)
        assert by_key(body["reported"])["LocalAuthListEnabled"]["value"] == "false"
        answer = by_key(body["last_answers"])["LocalAuthListEnabled"]
        assert answer["status"] == "Accepted" and answer["origin"] == "api"
        assert answer["answered_at"] is not None


async def test_rejected_and_not_supported_are_recorded_with_200(
    app: Application, api: httpx.AsyncClient
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        rejected = await put(api, "LightIntensity", "80")
        assert rejected.status_code == 200 and rejected.json()["status"] == "Rejected"
        # A vendor key the charge point does not have: any string goes, it answers.
        unsupported = await put(api, "VendorTurbo", "on")
        assert unsupported.status_code == 200
        assert unsupported.json()["status"] == "NotSupported"
        answers = by_key((await configuration(api))["last_answers"])
        assert answers["LightIntensity"]["status"] == "Rejected"
        assert answers["VendorTurbo"]["status"] == "NotSupported"
        # Neither changed what the charge point reported.
        reported = by_key((await configuration(api))["reported"])
        assert reported["LightIntensity"]["value"] == "50"
        assert "VendorTurbo" not in reported


async def test_reboot_required_is_shown_and_reset_on_request(
    app: Application, api: httpx.AsyncClient
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        response = await put(api, "ConnectionTimeOut", "120")
        assert response.json()["status"] == "RebootRequired"
        assert response.json()["reset"] is None
        assert cp.actions("Reset") == []
        body = await configuration(api)
        assert body["reboot_required"] is True
        assert body["pending_reboot"] == ["ConnectionTimeOut"]

        response = await put(api, "ConnectionTimeOut", "150", reset="Soft")
        assert response.status_code == 200, response.text
        assert response.json()["reset"] == {"type": "Soft", "status": "Accepted", "error": None}
        assert cp.actions("Reset") == [{"type": "Soft"}]

        # The charge point reboots: the pending change is in effect.
        before = (await app.services.configuration.view("CP1")).sync
        assert before is not None
        await boot_notification(cp)
        await synced(app, cp, since=before.synced_at)
        body = await configuration(api)
        assert body["reboot_required"] is False
        assert by_key(body["reported"])["ConnectionTimeOut"]["value"] == "150"


async def test_unknown_keys_are_recorded(app: Application, api: httpx.AsyncClient) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        response = await api.post(
            "/api/v1/charge-points/CP1/configuration/refresh",
            params={"key": ["HeartbeatInterval", "NoSuchKey"]},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["unknown_keys"] == ["NoSuchKey"]
        assert cp.actions("GetConfiguration")[-1] == {"key": ["HeartbeatInterval", "NoSuchKey"]}
        # A partial answer keeps the rest of the report.
        assert "NumberOfConnectors" in by_key(body["reported"])


async def test_refresh_in_batches_of_get_configuration_max_keys(
    app: Application, api: httpx.AsyncClient
) -> None:
    table = standard_table()
    table["GetConfigurationMaxKeys"] = Entry("2", readonly=True)
    async with charge_point(app, table=table) as cp:
        await synced(app, cp)
        keys = ["HeartbeatInterval", "VendorMode", "NumberOfConnectors", "LightIntensity", "X"]
        response = await api.post(
            "/api/v1/charge-points/CP1/configuration/refresh", params={"key": keys}
        )
        assert response.status_code == 200, response.text
        asked = [call["key"] for call in cp.actions("GetConfiguration")[1:]]
        assert asked == [keys[0:2], keys[2:4], keys[4:]]
        assert response.json()["unknown_keys"] == ["X"]


async def test_generic_call_endpoint_is_recorded(app: Application, api: httpx.AsyncClient) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        response = await api.post(
            "/api/v1/charge-points/CP1/calls/ChangeConfiguration",
            json={"key": "HeartbeatInterval", "value": "0600"},
        )
        assert response.json() == {"status": "Accepted"}
        assert cp.actions("ChangeConfiguration") == [{"key": "HeartbeatInterval", "value": "600"}]
        answer = by_key((await configuration(api))["last_answers"])["HeartbeatInterval"]
        assert answer["origin"] == "call" and answer["value"] == "600"

        response = await api.post(
            "/api/v1/charge-points/CP1/calls/GetConfiguration", json={"key": ["VendorMode"]}
        )
        assert response.json()["configurationKey"] == [
            {"key": "VendorMode", "readonly": False, "value": "eco"}
        ]


async def test_unknown_and_disconnected_charge_points(
    app: Application, api: httpx.AsyncClient
) -> None:
    assert_error(await api.get("/api/v1/charge-points/NOPE/configuration"), 404, "not_found")
    assert_error(await put(api, "HeartbeatInterval", "60", "NOPE"), 404, "not_found")
    await app.services.charge_points.register("OFF1")
    assert_error(await put(api, "HeartbeatInterval", "60", "OFF1"), 409, "not_connected")
    assert_error(
        await api.post("/api/v1/charge-points/OFF1/configuration/refresh"), 409, "not_connected"
    )
    # Nothing was sent, so nothing is recorded.
    assert (await configuration(api, "OFF1"))["last_answers"] == []


async def test_read_token_may_only_look(app: Application, api: httpx.AsyncClient) -> None:
    from kilowatt.services.api_tokens import Role

    _, secret = await app.services.tokens.create("reader", Role.READ)
    await app.services.charge_points.register("CP1")
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.get("/api/v1/charge-points/CP1/configuration", headers=headers)).is_success
    response = await api.put(
        "/api/v1/charge-points/CP1/configuration/HeartbeatInterval",
        json={"value": "60"},
        headers=headers,
    )
    assert_error(response, 403, "forbidden")


# --------------------------------------------------------- drift and apply


async def test_drift_with_template_and_per_charge_point_values(
    app: Application, api: httpx.AsyncClient
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        assert (
            await api.post("/api/v1/configuration-templates", json={"name": "fleet"})
        ).status_code == 201
        for key, value in [
            ("HeartbeatInterval", "900"),
            ("MeterValueSampleInterval", "60"),  # what it has already
            ("VendorMode", "turbo"),
            ("ConnectionTimeOut", "90"),
        ]:
            response = await api.put(
                f"/api/v1/configuration-templates/fleet/values/{key}", json={"value": value}
            )
            assert response.status_code == 200, response.text
        response = await api.put(
            "/api/v1/charge-points/CP1/configuration-template", json={"template": "fleet"}
        )
        assert response.status_code == 200 and response.json()["template"] == "fleet"
        # Per charge point wins over the template.
        response = await api.put(
            "/api/v1/charge-points/CP1/configuration/desired/HeartbeatInterval",
            json={"value": "0120"},
        )
        assert response.json() == {"key": "HeartbeatInterval", "value": "120"}
        response = await api.put(
            "/api/v1/charge-points/CP1/configuration/desired/NoSuchVendorKey",
            json={"value": "1"},
        )
        assert response.status_code == 200

        body = await configuration(api)
        desired = by_key(body["desired"])
        assert desired["HeartbeatInterval"]["value"] == "120"
        assert desired["HeartbeatInterval"]["source"] == "charge-point"
        assert desired["VendorMode"] == {
            "key": "VendorMode",
            "value": "turbo",
            "source": "template",
            "template": "fleet",
        }
        drift = by_key(body["drift"])
        assert set(drift) == {"HeartbeatInterval", "VendorMode", "NoSuchVendorKey"}
        assert drift["HeartbeatInterval"]["status"] == "differs"
        assert drift["HeartbeatInterval"]["reported"] == "300"
        assert drift["NoSuchVendorKey"]["status"] == "not_reported"

        response = await api.post("/api/v1/charge-points/CP1/configuration/apply")
        assert response.status_code == 200, response.text
        result = response.json()
        # The desired keys were fetched first; the vendor key it does not know is skipped.
        assert cp.actions("GetConfiguration")[-1]["key"] == sorted(desired)
        assert {c["key"]: c["status"] for c in result["changes"]} == {
            "HeartbeatInterval": "Accepted",
            "VendorMode": "Accepted",
        }
        assert [(s["key"], s["status"]) for s in result["skipped"]] == [
            ("NoSuchVendorKey", "unknown_key")
        ]
        assert cp.table["HeartbeatInterval"].value == "120"
        assert cp.table["VendorMode"].value == "turbo"
        body = await configuration(api)
        assert [entry["key"] for entry in body["drift"]] == ["NoSuchVendorKey"]
        assert by_key(body["last_answers"])["VendorMode"]["origin"] == "apply"

        # Removing the charge point's own value: the template's applies again.
        response = await api.delete(
            "/api/v1/charge-points/CP1/configuration/desired/HeartbeatInterval"
        )
        assert response.status_code == 204
        drift = by_key((await configuration(api))["drift"])
        assert drift["HeartbeatInterval"]["desired"] == "900"
        assert drift["HeartbeatInterval"]["source"] == "template"


async def test_desired_values_are_checked(app: Application, api: httpx.AsyncClient) -> None:
    await app.services.charge_points.register("CP1")
    base = "/api/v1/charge-points/CP1/configuration/desired"
    assert_error(await api.put(f"{base}/NumberOfConnectors", json={"value": "2"}), 409, "read_only")
    assert_error(
        await api.put(f"{base}/HeartbeatInterval", json={"value": "x"}), 422, "invalid_value"
    )
    assert_error(
        await api.put(f"{base}/AuthorizationKey", json={"value": SECRET}), 422, "write_only"
    )
    assert (await api.post("/api/v1/configuration-templates", json={"name": "t"})).is_success
    assert_error(
        await api.put(
            "/api/v1/configuration-templates/t/values/AuthorizationKey", json={"value": SECRET}
        ),
        422,
        "write_only",
    )
    assert_error(
        await api.put(
            "/api/v1/configuration-templates/nope/values/HeartbeatInterval", json={"value": "1"}
        ),
        404,
        "not_found",
    )
    assert_error(
        await api.put(
            "/api/v1/charge-points/CP1/configuration-template", json={"template": "nope"}
        ),
        404,
        "not_found",
    )
    assert_error(
        await api.post("/api/v1/configuration-templates", json={"name": "t"}), 409, "already_exists"
    )


async def test_reboot_pending_drift_is_not_sent_again(
    app: Application, api: httpx.AsyncClient
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        await app.services.configuration.set_desired("CP1", "ConnectionTimeOut", "45")
        result = (await api.post("/api/v1/charge-points/CP1/configuration/apply")).json()
        assert [c["status"] for c in result["changes"]] == ["RebootRequired"]
        result = (await api.post("/api/v1/charge-points/CP1/configuration/apply")).json()
        assert result["changes"] == []
        assert [(s["key"], s["status"]) for s in result["skipped"]] == [
            ("ConnectionTimeOut", "reboot_pending")
        ]
        assert len(cp.actions("ChangeConfiguration")) == 1


async def test_apply_on_boot(start_app: StartApp) -> None:
    app = await start_app(configuration_apply_on_boot=True)
    await app.services.charge_points.register("CP1")
    await app.services.configuration.set_desired("CP1", "MeterValueSampleInterval", "15")
    async with charge_point(app) as cp:
        await eventually(
            lambda: (
                cp.actions("ChangeConfiguration")
                == [{"key": "MeterValueSampleInterval", "value": "15"}]
            ),
            "the desired value sent after boot",
        )
        # The full GetConfiguration came first (sync on boot is on by default).
        assert cp.actions("GetConfiguration")[0] == {"key": None}

        async def applied() -> bool:
            view = await app.services.configuration.view("CP1")
            return any(a.key == "MeterValueSampleInterval" for a in view.last_answers)

        async with asyncio.timeout(5):
            while not await applied():
                await asyncio.sleep(0.01)
        view = await app.services.configuration.view("CP1")
        assert [a.origin for a in view.last_answers] == ["boot"]


async def test_desired_heartbeat_interval_is_the_boot_interval(app: Application) -> None:
    await app.services.charge_points.register("CP1")
    await app.services.configuration.add_template("fleet")
    await app.services.configuration.set_template_value("fleet", "HeartbeatInterval", "600")
    await app.services.configuration.assign_template("CP1", "fleet")
    async with charge_point(app, boot=False) as cp:
        assert (await boot_notification(cp)).interval == 600
        await app.services.configuration.set_desired("CP1", "HeartbeatInterval", "45")
        assert (await boot_notification(cp)).interval == 45
    await app.services.charge_points.register("CP2")
    async with charge_point(app, "CP2", boot=False) as cp:
        assert (await boot_notification(cp)).interval == app.settings.heartbeat_interval


# ---------------------------------------------------------- write-only key


async def test_write_only_secret_is_sent_but_never_returned_stored_or_logged(
    app: Application, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    table = standard_table()
    # A charge point that (wrongly) lists its AuthorizationKey value.
    table["AuthorizationKey"] = Entry(
        "ffffffffffffffffffffffffffffffff", write_only=True, report_anyway=True
    )
    async with charge_point(app, table=table) as cp:
        await synced(app, cp)
        response = await put(api, "AuthorizationKey", SECRET)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "key": "AuthorizationKey",
            "value": None,
            "secret": True,
            "status": "Accepted",
            "error": None,
            "reset": None,
        }
        assert cp.actions("ChangeConfiguration") == [{"key": "AuthorizationKey", "value": SECRET}]

        body = await configuration(api)
        answer = by_key(body["last_answers"])["AuthorizationKey"]
        assert answer["value"] is None and answer["secret"] is True
        assert answer["status"] == "Accepted" and answer["answered_at"] is not None
        assert by_key(body["reported"])["AuthorizationKey"]["value"] is None

        # Through the generic endpoint, the report comes back redacted too.
        response = await api.post(
            "/api/v1/charge-points/CP1/calls/GetConfiguration", json={"key": ["AuthorizationKey"]}
        )
        assert response.json()["configurationKey"] == [
            {"key": "AuthorizationKey", "readonly": False, "value": "<redacted>"}
        ]
        # A wrong one is refused without being repeated.
        error = assert_error(
            await put(api, "AuthorizationKey", "secret-but-short"), 422, "invalid_value"
        )
        assert "secret-but-short" not in str(error)

        everything = (await api.get("/api/v1/charge-points/CP1/configuration")).text
        everything += (await api.get("/api/v1/configuration-keys")).text
        for secret in (SECRET, "ffffffffffffffffffffffffffffffff"):
            assert secret.lower() not in everything.lower()
            leaks = {
                record.name
                for record in caplog.records
                if secret in record.getMessage() + str(record.__dict__)
            }
            # Kilowatt never logs the value. The test's client libraries do, and so does
            # the WebSocket library's DEBUG frame dump, which Kilowatt's own log handler
            # filters (test_logging_never_shows_a_secret_frame).
            assert not {name for name in leaks if name.startswith("kilowatt")}, leaks
            assert leaks <= {"ocpp", "websockets.client", "websockets.server"}, leaks

        def stored_values(connection: Any) -> list[Any]:
            rows: list[Any] = []
            for table in (t.configuration_reported, t.configuration_changes):
                rows.extend(connection.execute(table.select()).all())
            return rows

        rows = await app.services.store.run_sync_admin(stored_values)
        assert rows and not any(SECRET in str(row) or "ffffffff" in str(row) for row in rows)

        # The message log keeps every frame, but never the secret's value.
        message_log = app.services.message_log
        assert message_log is not None
        await message_log.flush()

        def logged(connection: Any) -> list[str]:
            return [row.frame for row in connection.execute(t.message_log.select()).all()]

        frames = await app.services.store.run_sync_admin(logged)
        assert any('"ChangeConfiguration"' in frame for frame in frames)
        assert not any(SECRET in f or "ffffffffffffffff" in f for f in frames), frames
