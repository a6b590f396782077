"""The simulator against a real Kilowatt: sessions are stored, remote control works."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kilowatt.app import Application
from kilowatt.domain.models import IdTag, MeterSample, Transaction, TransactionState
from kilowatt.ocpp16.routes import CENTRAL_TO_CHARGE_POINT
from kilowatt.simulator import SimulationConfig, run_simulation
from kilowatt.simulator import transport as simulator_transport
from tests.simulator.conftest import (
    CHARGE_POINTS,
    FAST,
    QUIET,
    api_client,
    eventually,
    ocpp_url,
    register_tags,
    simulation,
)

CP = "SIM00001"
TAG = "REMOTE-1"
CERTIFICATE = (
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUPLrJ8zJvW2bX0t\n-----END CERTIFICATE-----\n"
)


async def call(api: httpx.AsyncClient, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(f"/api/v1/charge-points/{CP}/calls/{action}", json=payload)
    assert response.status_code == 200, (action, response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


async def transactions(app: Application, **filters: Any) -> list[Transaction]:
    return await app.services.transactions.list_transactions(limit=1000, **filters)


async def samples(app: Application, transaction_id: int) -> list[MeterSample]:
    transaction = await app.services.transactions.get(transaction_id, with_samples=True)
    assert transaction is not None
    return transaction.samples


async def remote_start(app: Application, api: httpx.AsyncClient, connector: int = 1) -> int:
    """Start a session on CP's connector through the API; its stored transaction id."""
    response = await api.post(
        f"/api/v1/charge-points/{CP}/remote-start", json={"idTag": TAG, "connectorId": connector}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "Accepted"}
    found: list[Transaction] = []

    async def started() -> bool:
        found[:] = await transactions(app, charge_point_id=CP, state=TransactionState.ACTIVE)
        return any(t.connector_id == connector and t.id_tag == TAG for t in found)

    await eventually(started, "the remotely started transaction to be stored")
    return next(t.id for t in found if t.connector_id == connector)


def power(sample_list: list[MeterSample]) -> list[Decimal]:
    return [
        s.value for s in sample_list if s.measurand == "Power.Active.Import" and s.value is not None
    ]


# ------------------------------------------------------------------- sessions


async def test_sessions_and_meter_values_are_stored(kilowatt: Application) -> None:
    await register_tags(kilowatt, CHARGE_POINTS)
    result = await run_simulation(
        SimulationConfig(
            url=ocpp_url(kilowatt),
            charge_points=CHARGE_POINTS,
            connectors=2,
            scenario=FAST,
            duration=4.0,
            seed=1,
        )
    )
    assert result.errors == 0, result.first_errors
    assert result.boots == CHARGE_POINTS
    assert result.rejected == 0
    assert result.sessions_completed >= CHARGE_POINTS

    stored = await transactions(kilowatt)
    completed = [t for t in stored if t.state is TransactionState.COMPLETED]
    assert len(completed) == result.sessions_completed
    assert {t.charge_point_id for t in stored} == {f"SIM{i:05d}" for i in range(1, 6)}
    assert all(t.meter_stop is not None and t.meter_stop >= t.meter_start for t in completed)
    assert {t.stop_reason for t in completed} <= {"Local", "EVDisconnected", "Other"}

    measured: set[str] = set()
    for transaction in completed:
        for sample in await samples(kilowatt, transaction.id):
            measured.add(sample.measurand)
            assert sample.transaction_id == transaction.id
    assert {"Energy.Active.Import.Register", "Power.Active.Import", "SoC"} <= measured


async def test_unknown_id_tags_are_refused_and_sessions_do_not_start(
    kilowatt: Application,
) -> None:
    result = await run_simulation(
        SimulationConfig(
            url=ocpp_url(kilowatt), charge_points=2, scenario=FAST, duration=2.0, seed=2
        )
    )
    assert result.errors == 0, result.first_errors
    assert result.rejected > 0
    assert result.sessions_started == 0
    assert "id tags" in result.summary()


# ------------------------------------------------------------- remote control


async def test_remote_start_through_the_api_starts_a_session(kilowatt: Application) -> None:
    await kilowatt.services.authorization.add(IdTag(TAG))
    async with simulation(kilowatt, QUIET) as sim, api_client(kilowatt) as api:
        transaction_id = await remote_start(kilowatt, api)
        transaction = await kilowatt.services.transactions.get(transaction_id)
        assert transaction is not None
        assert transaction.connector_id == 1
        assert transaction.charge_point_id == CP

        async def metered() -> bool:
            return len(power(await samples(kilowatt, transaction_id))) >= 1

        await eventually(metered, "meter values of the remote session")
        assert sim.charge_point(CP).connector(1).transaction_id == transaction_id

        # The connector is busy now: a second remote start there is refused.
        response = await api.post(
            f"/api/v1/charge-points/{CP}/remote-start", json={"idTag": TAG, "connectorId": 1}
        )
        assert response.json() == {"status": "Rejected"}

        assert await call(api, "RemoteStopTransaction", {"transactionId": transaction_id}) == {
            "status": "Accepted"
        }

        async def stopped() -> bool:
            stored = await kilowatt.services.transactions.get(transaction_id)
            return stored is not None and stored.state is TransactionState.COMPLETED

        await eventually(stopped, "the remote stop")
        stored = await kilowatt.services.transactions.get(transaction_id)
        assert stored is not None and stored.stop_reason == "Remote"


async def test_reset_reboots_the_charge_point(kilowatt: Application) -> None:
    await kilowatt.services.authorization.add(IdTag(TAG))
    async with simulation(kilowatt, QUIET) as sim, api_client(kilowatt) as api:
        charge_point = sim.charge_point(CP)
        transaction_id = await remote_start(kilowatt, api)
        before = await kilowatt.services.charge_points.get(CP)
        assert before is not None and charge_point.boots == 1

        response = await api.post(f"/api/v1/charge-points/{CP}/reset", json={"type": "Soft"})
        assert response.json() == {"status": "Accepted"}

        async def rebooted() -> bool:
            return charge_point.boots == 2 and charge_point.booted

        await eventually(rebooted, "the charge point to boot again")
        assert charge_point.resets == ["Soft"]
        assert sim.stats.reboots == 1
        stored = await kilowatt.services.transactions.get(transaction_id)
        assert stored is not None
        assert stored.state is TransactionState.COMPLETED
        assert stored.stop_reason == "SoftReset"
        after = await kilowatt.services.charge_points.get(CP)
        assert after is not None and after.last_boot_at is not None
        assert before.last_boot_at is not None  # it booted once before the reset
        assert after.last_boot_at > before.last_boot_at

        async def reconnected() -> bool:
            return kilowatt.registry.get(CP) is not None

        await eventually(reconnected, "the new connection")

        # A hard reset: the transaction is stopped (HardReset) after the reboot.
        transaction_id = await remote_start(kilowatt, api)
        response = await api.post(f"/api/v1/charge-points/{CP}/reset", json={"type": "Hard"})
        assert response.json() == {"status": "Accepted"}

        async def hard_stopped() -> bool:
            stored = await kilowatt.services.transactions.get(transaction_id)
            return stored is not None and stored.stop_reason == "HardReset"

        await eventually(hard_stopped, "the StopTransaction (HardReset) after the reboot")
        assert charge_point.resets == ["Soft", "Hard"]


async def test_a_charging_profile_lowers_the_reported_power(kilowatt: Application) -> None:
    await kilowatt.services.authorization.add(IdTag(TAG))
    async with simulation(kilowatt, QUIET), api_client(kilowatt) as api:
        transaction_id = await remote_start(kilowatt, api)

        async def charging_fast() -> bool:
            return any(value > 5000 for value in power(await samples(kilowatt, transaction_id)))

        await eventually(charging_fast, "power above 5 kW before the profile")
        profile = {
            "chargingProfileId": 1,
            "transactionId": transaction_id,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 2000.0}],
            },
        }
        answer = await call(
            api, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile}
        )
        assert answer == {"status": "Accepted"}
        seen = len(power(await samples(kilowatt, transaction_id)))

        async def limited() -> bool:
            after = power(await samples(kilowatt, transaction_id))[seen:]
            return len(after) >= 2 and all(value <= 2000 for value in after)

        await eventually(limited, "meter values at or below the 2 kW limit")

        schedule = await call(
            api,
            "GetCompositeSchedule",
            {"connectorId": 1, "duration": 600, "chargingRateUnit": "W"},
        )
        assert schedule["status"] == "Accepted"
        assert schedule["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 2000.0
        amps = await call(
            api,
            "GetCompositeSchedule",
            {"connectorId": 1, "duration": 600, "chargingRateUnit": "A"},
        )
        assert amps["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == round(
            2000 / (230 * 3), 1
        )

        cleared = await call(api, "ClearChargingProfile", {"id": 1})
        assert cleared == {"status": "Accepted"}
        seen = len(power(await samples(kilowatt, transaction_id)))

        async def unlimited() -> bool:
            after = power(await samples(kilowatt, transaction_id))[seen:]
            return any(value > 2000 for value in after)

        await eventually(unlimited, "the power to rise again without the profile")


# ------------------------------------------------- every CS→CP action answered


def _payloads() -> dict[str, dict[str, Any]]:
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    hash_data = {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": "ab" * 32,
        "issuerKeyHash": "cd" * 32,
        "serialNumber": "01",
    }
    return {
        "CancelReservation": {"reservationId": 99},
        "CertificateSigned": {"certificateChain": CERTIFICATE},
        "ChangeAvailability": {"connectorId": 2, "type": "Inoperative"},
        "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "120"},
        "ClearCache": {},
        "ClearChargingProfile": {"connectorId": 1},
        "DataTransfer": {"vendorId": "com.example", "messageId": "Hello", "data": "x"},
        "DeleteCertificate": {"certificateHashData": hash_data},
        "ExtendedTriggerMessage": {"requestedMessage": "SignChargePointCertificate"},
        "GetCompositeSchedule": {"connectorId": 0, "duration": 3600},
        "GetConfiguration": {},
        "GetDiagnostics": {"location": "ftp://127.0.0.1/diagnostics/"},
        "GetInstalledCertificateIds": {"certificateType": "CentralSystemRootCertificate"},
        "GetLocalListVersion": {},
        "GetLog": {
            "logType": "SecurityLog",
            "requestId": 5,
            "log": {"remoteLocation": "https://127.0.0.1/logs"},
        },
        "InstallCertificate": {
            "certificateType": "CentralSystemRootCertificate",
            "certificate": CERTIFICATE,
        },
        "RemoteStartTransaction": {"idTag": TAG, "connectorId": 1},
        "RemoteStopTransaction": {"transactionId": 123456},
        "ReserveNow": {
            "connectorId": 1,
            "expiryDate": later,
            "idTag": "RESERVED",
            "reservationId": 7,
        },
        "Reset": {"type": "Soft"},
        "SendLocalList": {
            "listVersion": 3,
            "updateType": "Full",
            "localAuthorizationList": [{"idTag": TAG, "idTagInfo": {"status": "Accepted"}}],
        },
        "SetChargingProfile": {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": 9,
                "stackLevel": 1,
                "chargingProfilePurpose": "ChargePointMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0}],
                },
            },
        },
        "SignedUpdateFirmware": {
            "requestId": 8,
            "firmware": {
                "location": "https://127.0.0.1/firmware.bin",
                "retrieveDateTime": later,
                "signingCertificate": CERTIFICATE,
                "signature": "c2lnbmF0dXJl",
            },
        },
        "TriggerMessage": {"requestedMessage": "Heartbeat"},
        "UnlockConnector": {"connectorId": 2},
        "UpdateFirmware": {"location": "https://127.0.0.1/firmware.bin", "retrieveDate": later},
    }


async def test_every_central_system_call_is_answered_validly(kilowatt: Application) -> None:
    """The API answers 200 only for a schema-valid CALLRESULT, so each 200 is proof."""
    payloads = _payloads()
    assert set(payloads) == set(CENTRAL_TO_CHARGE_POINT)
    await kilowatt.services.authorization.add(IdTag(TAG))
    async with simulation(kilowatt, QUIET, charge_points=1) as sim, api_client(kilowatt) as api:
        charge_point = sim.charge_point(CP)
        assert charge_point.actions == set(CENTRAL_TO_CHARGE_POINT)
        answers = {}
        for action in sorted(payloads):
            if action == "Reset":
                continue  # last: it takes the charge point away for a moment
            answers[action] = await call(api, action, payloads[action])
        # After SetChargingProfile (the ChargePointMaxProfile of 32 A on connector 0):
        limited = await call(api, "GetCompositeSchedule", payloads["GetCompositeSchedule"])
        answers["Reset"] = await call(api, "Reset", payloads["Reset"])

    assert answers["CancelReservation"] == {"status": "Rejected"}  # no such reservation
    assert answers["CertificateSigned"] == {"status": "Accepted"}
    assert answers["ChangeAvailability"] == {"status": "Accepted"}
    assert answers["ChangeConfiguration"] == {"status": "Accepted"}
    assert answers["DataTransfer"] == {"status": "UnknownVendorId"}
    assert answers["DeleteCertificate"] == {"status": "NotFound"}
    assert answers["ExtendedTriggerMessage"] == {"status": "Accepted"}
    # No profile yet: two connectors of 11 kW; then 32 A on three phases of 230 V.
    assert answers["GetCompositeSchedule"]["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 22000.0}
    ]
    assert limited["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32.0 * 230 * 3}
    ]
    assert answers["GetDiagnostics"]["fileName"].startswith(CP)
    assert answers["GetInstalledCertificateIds"] == {"status": "NotFound"}
    assert answers["GetLocalListVersion"] == {"listVersion": 0}
    assert answers["GetLog"]["status"] == "Accepted"
    assert answers["InstallCertificate"] == {"status": "Accepted"}
    assert answers["RemoteStartTransaction"] == {"status": "Accepted"}
    assert answers["RemoteStopTransaction"] == {"status": "Rejected"}  # unknown transaction
    assert answers["ReserveNow"] in ({"status": "Accepted"}, {"status": "Occupied"})
    assert answers["Reset"] == {"status": "Accepted"}
    assert answers["SendLocalList"] == {"status": "Accepted"}
    assert answers["SetChargingProfile"] == {"status": "Accepted"}
    assert answers["SignedUpdateFirmware"] == {"status": "Accepted"}
    assert answers["TriggerMessage"] == {"status": "Accepted"}
    assert answers["UnlockConnector"] == {"status": "Unlocked"}
    assert answers["UpdateFirmware"] == {}
    keys = {k["key"]: k for k in answers["GetConfiguration"]["configurationKey"]}
    assert keys["NumberOfConnectors"] == {
        "key": "NumberOfConnectors",
        "readonly": True,
        "value": "2",
    }
    assert keys["HeartbeatInterval"]["value"] == "120"  # changed before, in order


async def test_configuration_keys(kilowatt: Application) -> None:
    async with simulation(kilowatt, QUIET, charge_points=1) as sim, api_client(kilowatt) as api:
        charge_point = sim.charge_point(CP)
        answer = await call(
            api, "GetConfiguration", {"key": ["MeterValueSampleInterval", "NoSuchKey"]}
        )
        assert answer == {
            "configurationKey": [
                {"key": "MeterValueSampleInterval", "readonly": False, "value": "1"}
            ],
            "unknownKey": ["NoSuchKey"],
        }
        for key, value in [
            ("MeterValueSampleInterval", "15"),
            ("AuthorizeRemoteTxRequests", "TRUE"),
        ]:
            answer = await call(api, "ChangeConfiguration", {"key": key, "value": value})
            assert answer == {"status": "Accepted"}, (key, value)
        assert charge_point.keys.integer("MeterValueSampleInterval") == 15
        assert charge_point.keys.boolean("AuthorizeRemoteTxRequests")

    # What the Central System lets through, the charge point still checks itself.
    keys = charge_point.keys
    for key, value, status in [
        ("NumberOfConnectors", "4", "Rejected"),  # read-only
        ("SupportedFeatureProfiles", "Core", "Rejected"),  # read-only
        ("MeterValueSampleInterval", "soon", "Rejected"),  # not an integer
        ("HeartbeatInterval", "0", "Rejected"),  # below its minimum
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Nonsense", "Rejected"),
        ("StopTransactionOnInvalidId", "maybe", "Rejected"),
        ("NoSuchKey", "1", "NotSupported"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register", "Accepted"),
    ]:
        assert keys.change_configuration(key, value) == status, (key, value)
    assert keys.items("MeterValuesSampledData") == ["Energy.Active.Import.Register"]


async def test_trigger_message_sends_the_requested_message(kilowatt: Application) -> None:
    async with simulation(kilowatt, QUIET, charge_points=1) as sim, api_client(kilowatt) as api:
        sent = sim.charge_point(CP).stats.calls_sent
        before = dict(sent)
        for requested in ("Heartbeat", "MeterValues", "StatusNotification", "BootNotification"):
            answer = await call(
                api, "TriggerMessage", {"requestedMessage": requested, "connectorId": 1}
            )
            assert answer == {"status": "Accepted"}

            async def arrived(requested: str = requested) -> bool:
                return sent.get(requested, 0) > before.get(requested, 0)

            await eventually(arrived, f"the triggered {requested}")

        async def stored() -> bool:
            found = await kilowatt.services.store.read(
                lambda repos: repos.meter_values.list_for_charge_point(CP)
            )
            return any(s.context == "Trigger" for s in found)

        await eventually(stored, "the triggered meter values to be stored")
        bad = await call(api, "TriggerMessage", {"requestedMessage": "Heartbeat", "connectorId": 9})
        assert bad == {"status": "Rejected"}


async def test_availability_reservations_and_local_list(kilowatt: Application) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with simulation(kilowatt, QUIET, charge_points=1) as sim, api_client(kilowatt) as api:
        charge_point = sim.charge_point(CP)

        async def status(connector: int, expected: str) -> bool:
            point = await kilowatt.services.charge_points.get(CP)
            assert point is not None
            return any(
                c.connector_id == connector and c.status == expected for c in point.connectors
            )

        assert await call(api, "ChangeAvailability", {"connectorId": 2, "type": "Inoperative"}) == {
            "status": "Accepted"
        }
        await eventually(lambda: status(2, "Unavailable"), "connector 2 Unavailable")
        reserve = {"connectorId": 2, "expiryDate": later, "idTag": "R1", "reservationId": 1}
        assert await call(api, "ReserveNow", reserve) == {"status": "Unavailable"}
        assert await call(api, "ChangeAvailability", {"connectorId": 2, "type": "Operative"}) == {
            "status": "Accepted"
        }
        await eventually(lambda: status(2, "Available"), "connector 2 Available again")
        assert await call(api, "ReserveNow", reserve) == {"status": "Accepted"}
        await eventually(lambda: status(2, "Reserved"), "connector 2 Reserved")
        assert await call(api, "CancelReservation", {"reservationId": 1}) == {"status": "Accepted"}
        assert await call(api, "CancelReservation", {"reservationId": 1}) == {"status": "Rejected"}
        await eventually(lambda: status(2, "Available"), "connector 2 Available after the cancel")

        full = {
            "listVersion": 4,
            "updateType": "Full",
            "localAuthorizationList": [
                {"idTag": "A", "idTagInfo": {"status": "Accepted"}},
                {"idTag": "B", "idTagInfo": {"status": "Blocked"}},
            ],
        }
        assert await call(api, "SendLocalList", full) == {"status": "Accepted"}
        stale = {"listVersion": 4, "updateType": "Differential", "localAuthorizationList": []}
        assert await call(api, "SendLocalList", stale) == {"status": "VersionMismatch"}
        remove = {
            "listVersion": 5,
            "updateType": "Differential",
            "localAuthorizationList": [{"idTag": "B"}],
        }
        assert await call(api, "SendLocalList", remove) == {"status": "Accepted"}
        assert await call(api, "GetLocalListVersion", {}) == {"listVersion": 5}
        assert set(charge_point.local_list) == {"A"}


async def test_unlock_stops_the_session(kilowatt: Application) -> None:
    await kilowatt.services.authorization.add(IdTag(TAG))
    async with simulation(kilowatt, QUIET, charge_points=1), api_client(kilowatt) as api:
        transaction_id = await remote_start(kilowatt, api)
        assert await call(api, "UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}

        async def stopped() -> bool:
            stored = await kilowatt.services.transactions.get(transaction_id)
            return stored is not None and stored.stop_reason == "UnlockCommand"

        await eventually(stopped, "the StopTransaction (UnlockCommand)")
        assert await call(api, "UnlockConnector", {"connectorId": 7}) == {"status": "NotSupported"}


async def test_remote_start_only_sessions_wait_for_the_central_system(
    kilowatt: Application,
) -> None:
    waiting = QUIET.model_copy(
        update={"idle_seconds": (0.0, 0.1), "remote_start_only": 1.0, "remote_start_wait": 60}
    )
    await kilowatt.services.authorization.add(IdTag(TAG))
    async with simulation(kilowatt, waiting, charge_points=1) as sim, api_client(kilowatt) as api:
        charge_point = sim.charge_point(CP)

        async def plugged() -> bool:
            return all(c.plugged_until is not None for c in charge_point.connectors)

        await eventually(plugged, "both EVs to plug in and wait")
        assert sim.stats.sessions_started == 0
        # No connector named: the charge point picks one with an EV waiting.
        response = await api.post(f"/api/v1/charge-points/{CP}/remote-start", json={"idTag": TAG})
        assert response.json() == {"status": "Accepted"}

        async def started() -> bool:
            return bool(await transactions(kilowatt, state=TransactionState.ACTIVE))

        await eventually(started, "the session of the waiting EV")
    assert sim.stats.remote_starts == 1


async def test_charge_points_in_several_processes(kilowatt: Application) -> None:
    await register_tags(kilowatt, 4)
    result = await asyncio.wait_for(
        run_simulation(
            SimulationConfig(
                url=ocpp_url(kilowatt),
                charge_points=4,
                scenario=FAST,
                duration=3.0,
                processes=2,
                seed=3,
            )
        ),
        timeout=90,
    )
    assert result.errors == 0, result.first_errors
    assert result.processes == 2
    assert result.boots == 4
    assert result.sessions_started > 0
    charge_points = {t.charge_point_id for t in await transactions(kilowatt)}
    assert charge_points == {"SIM00001", "SIM00002", "SIM00003", "SIM00004"}


async def test_websockets_transport(kilowatt: Application, monkeypatch: pytest.MonkeyPatch) -> None:
    # picows is installed, so "auto" would pick it: make sure "websockets" does not.
    async def no_picows(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("transport='websockets' connected with picows")

    monkeypatch.setattr(simulator_transport, "_connect_picows", no_picows)
    await register_tags(kilowatt, 2)
    result = await run_simulation(
        SimulationConfig(
            url=ocpp_url(kilowatt),
            charge_points=2,
            scenario=FAST,
            duration=2.5,
            transport="websockets",
            seed=4,
        )
    )
    assert result.errors == 0, result.first_errors
    assert result.boots == 2 and result.sessions_started > 0
