"""Scenario files, charging profiles and ``kilowatt simulate`` on the command line."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kilowatt.app import Application
from kilowatt.cli import main
from kilowatt.simulator import BUILTIN, Scenario, ScenarioError, load_scenario
from kilowatt.simulator.smart_charging import SmartCharging
from tests.simulator.conftest import ocpp_url, register_tags

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_builtin_scenario() -> None:
    assert load_scenario("builtin") is BUILTIN
    assert BUILTIN.meter_interval == 30
    assert BUILTIN.id_tags == ()


def test_toml_scenario(tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    path.write_text(
        "description = 'Office car park'\n"
        "idle_seconds = [60, 120]\n"
        "session_seconds = 3600\n"
        "meter_interval = 15\n"
        'id_tags = ["BADGE-1", "BADGE-2"]\n'
        "remote_start_only = 0.25\n"
    )
    scenario = load_scenario(path)
    assert scenario.name == "office"
    assert scenario.idle_seconds == (60.0, 120.0)
    assert scenario.session_seconds == (3600.0, 3600.0)
    assert scenario.id_tags == ("BADGE-1", "BADGE-2")
    assert scenario.remote_start_only == 0.25


def test_json_scenario(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"name": "depot", "max_power_w": 22000, "authorize": False}))
    scenario = load_scenario(path)
    assert scenario == Scenario(name="depot", max_power_w=22000, authorize=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("meter_intervall = 10\n", "meter_intervall: unknown key"),
        ("idle_seconds = [10, 5]\n", "idle_seconds"),
        ("remote_start_only = 2\n", "remote_start_only"),
        ('id_tags = ["ABCDEFGHIJKLMNOPQRSTUVWXYZ"]\n', "id_tags.0"),
        ("meter_interval = \n", "not valid TOML"),
    ],
)
def test_scenario_errors_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


def test_scenario_file_must_exist_and_be_toml_or_json(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    other = tmp_path / "scenario.yaml"
    other.write_text("a: 1\n")
    with pytest.raises(ScenarioError, match=r"\.toml or \.json"):
        load_scenario(other)


# ------------------------------------------------------------- smart charging


def _profile(purpose: str, limit: float, *, unit: str = "W", **extra: object) -> dict[str, object]:
    return {
        "chargingProfileId": extra.pop("profile_id", 1),
        "stackLevel": extra.pop("stack_level", 0),
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": extra.pop("kind", "Absolute"),
        "chargingSchedule": {
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": extra.pop("periods", [{"startPeriod": 0, "limit": limit}]),
            **extra,
        },
    }


def test_profiles_stack_and_limit_the_power() -> None:
    smart = SmartCharging(2, voltage=230, phases=3)
    assert smart.limit_w(1, NOW, transaction_start=None) is None
    assert (
        smart.install(0, _profile("TxDefaultProfile", 16, unit="A"), transaction_id=None, now=NOW)
        == "Accepted"
    )
    assert smart.limit_w(1, NOW, transaction_start=None) == 16 * 230 * 3
    # A TxProfile needs a transaction on its connector.
    tx = _profile("TxProfile", 3000, profile_id=2)
    assert smart.install(1, tx, transaction_id=None, now=NOW) == "Rejected"
    assert smart.install(1, tx, transaction_id=5, now=NOW) == "Accepted"
    assert smart.limit_w(1, NOW, transaction_start=NOW) == 3000
    assert smart.limit_w(2, NOW, transaction_start=NOW) == 16 * 230 * 3
    # The station's maximum is shared by the connectors that charge.
    station = _profile("ChargePointMaxProfile", 4000, profile_id=3)
    assert smart.install(1, station, transaction_id=None, now=NOW) == "Rejected"
    assert smart.install(0, station, transaction_id=None, now=NOW) == "Accepted"
    assert smart.limit_w(1, NOW, transaction_start=NOW, sharing=2) == 2000
    smart.end_transaction(1)
    assert smart.limit_w(1, NOW, transaction_start=None) == 4000
    assert (
        smart.clear(profile_id=3, connector_id=None, purpose=None, stack_level=None) == "Accepted"
    )
    assert smart.clear(profile_id=3, connector_id=None, purpose=None, stack_level=None) == "Unknown"


def test_composite_schedule_follows_the_periods() -> None:
    smart = SmartCharging(1, voltage=230, phases=3)
    start = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    profile = _profile(
        "TxDefaultProfile",
        0,
        periods=[{"startPeriod": 0, "limit": 11000}, {"startPeriod": 600, "limit": 3680}],
        startSchedule=start,
        duration=1200,
    )
    assert smart.install(1, profile, transaction_id=None, now=NOW) == "Accepted"
    periods = smart.composite(1, 1800, "W", NOW, transaction_start=None, default_w=7400)
    assert periods == [
        {"startPeriod": 0, "limit": 11000.0},
        {"startPeriod": 600, "limit": 3680.0},
        {"startPeriod": 1200, "limit": 7400.0},
    ]
    later = NOW + timedelta(seconds=900)
    assert smart.limit_w(1, later, transaction_start=None) == 3680


# ------------------------------------------------------------------ command line


def test_simulate_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", "--url", "http://127.0.0.1:1/", "--duration", "1"]) == 2
    assert "ws://" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 1\n")
    assert main(["simulate", "--url", "ws://127.0.0.1:1/", "--scenario", str(bad)]) == 2
    assert "nonsense: unknown key" in capsys.readouterr().err


async def test_kilowatt_simulate_command(kilowatt: Application, tmp_path: Path) -> None:
    await register_tags(kilowatt, 2)
    scenario = tmp_path / "quick.toml"
    scenario.write_text(
        "idle_seconds = [0.1, 0.3]\nsession_seconds = [0.5, 1]\nmeter_interval = 1\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kilowatt",
        "simulate",
        "--url",
        ocpp_url(kilowatt),
        "--charge-points",
        "2",
        "--scenario",
        str(scenario),
        "--duration",
        "3",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["boots"] == 2
    assert result["sessions_started"] > 0
    assert result["errors"] == 0, result["first_errors"]
    progress = [line for line in err.decode().splitlines() if line.startswith("[simulate]")]
    assert progress, err.decode()
    assert "connected 2/2" in "\n".join(progress)
    assert "msgs/s" in progress[-1] and "errors" in progress[-1]
