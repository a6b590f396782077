"""``kilowatt config``: get/diff/template on the database, set/apply/refresh through the
API of a running server. The CLI runs in a thread: the server runs on this event loop."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from kilowatt.app import Application
from kilowatt.cli import main
from kilowatt.services.api_tokens import Role
from tests.cli_runner import Result
from tests.configuration.conftest import charge_point, synced

SECRET = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


class Cli:
    def __init__(self, app: Application, capsys: pytest.CaptureFixture[str], token: str) -> None:
        self.app = app
        self.capsys = capsys
        self.token = token

    @property
    def db(self) -> list[str]:
        return ["--database-url", self.app.settings.database_url]

    @property
    def remote(self) -> list[str]:
        return ["--url", f"http://127.0.0.1:{self.app.gateway.port}", "--token", self.token]

    async def __call__(self, *argv: str) -> Result:
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    async def ok(self, *argv: str) -> Result:
        result = await self(*argv)
        assert result.code == 0, result
        return result


@pytest.fixture
async def cli(app: Application, capsys: pytest.CaptureFixture[str]) -> Cli:
    _, token = await app.services.tokens.create("cli", Role.ADMIN)
    return Cli(app, capsys, token)


async def test_get_set_diff_apply_refresh(app: Application, cli: Cli) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        shown = await cli.ok("config", "get", "CP1", *cli.db)
        assert "HeartbeatInterval" in shown.out and "300" in shown.out
        as_json: dict[str, Any] = json.loads(
            (await cli.ok("config", "get", "CP1", "--json", *cli.db)).out
        )
        assert {e["key"] for e in as_json["reported"]} >= {"HeartbeatInterval", "VendorMode"}

        result = await cli.ok("config", "set", "CP1", "HeartbeatInterval", "0120", *cli.remote)
        assert result.out.strip() == "CP1 HeartbeatInterval = 120: Accepted"
        assert cp.table["HeartbeatInterval"].value == "120"

        refused = await cli("config", "set", "CP1", "NumberOfConnectors", "4", *cli.remote)
        assert refused.code == 1 and "read-only" in refused.err

        rebooting = await cli.ok("config", "set", "CP1", "ConnectionTimeOut", "30", *cli.remote)
        assert "RebootRequired" in rebooting.out and "--reset" in rebooting.err
        reset = await cli.ok(
            "config", "set", "CP1", "ConnectionTimeOut", "31", "--reset", "soft", *cli.remote
        )
        assert "Soft Reset: Accepted" in reset.out
        assert cp.actions("Reset") == [{"type": "Soft"}]

        # Desired values: per charge point and through a template (database only).
        await cli.ok("config", "set", "CP1", "VendorMode", "turbo", "--desired", *cli.db)
        await cli.ok("config", "template", "add", "fleet", "--description", "depot", *cli.db)
        await cli.ok(
            "config", "template", "set", "fleet", "MeterValueSampleInterval", "15", *cli.db
        )
        await cli.ok("config", "template", "assign", "fleet", "CP1", *cli.db)
        listed = await cli.ok("config", "template", "list", *cli.db)
        assert "fleet" in listed.out and "CP1" in listed.out
        bad = await cli("config", "template", "set", "fleet", "NumberOfConnectors", "9", *cli.db)
        assert bad.code == 1 and "read-only" in bad.err

        diff = await cli("config", "diff", "CP1", "--exit-code", *cli.db)
        assert diff.code == 1, diff
        assert "VendorMode" in diff.out and "MeterValueSampleInterval" in diff.out
        drift = json.loads((await cli.ok("config", "diff", "CP1", "--json", *cli.db)).out)
        assert {(d["key"], d["source"]) for d in drift} == {
            ("VendorMode", "charge-point"),
            ("MeterValueSampleInterval", "template"),
        }

        applied = await cli.ok("config", "apply", "CP1", *cli.remote)
        assert "CP1 VendorMode = turbo: Accepted" in applied.out
        assert "CP1 MeterValueSampleInterval = 15: Accepted" in applied.out
        assert (
            "no difference" in (await cli.ok("config", "diff", "CP1", "--exit-code", *cli.db)).out
        )

        refreshed = await cli.ok("config", "refresh", "CP1", "--key", "Nope", *cli.remote)
        assert refreshed.out.strip().endswith("keys reported; unknown keys: Nope")

        await cli.ok("config", "unset", "CP1", "VendorMode", *cli.db)
        await cli.ok("config", "template", "unassign", "CP1", *cli.db)
        assert (await app.services.configuration.view("CP1")).desired == {}


async def test_the_secret_is_never_printed(
    app: Application, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with charge_point(app) as cp:
        await synced(app, cp)
        monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
        result = await cli.ok("config", "set", "CP1", "AuthorizationKey", "-", *cli.remote)
        assert result.out.strip() == "CP1 AuthorizationKey = (write-only, not shown): Accepted"
        assert cp.actions("ChangeConfiguration") == [{"key": "AuthorizationKey", "value": SECRET}]
        for argv in (
            ("config", "get", "CP1", *cli.db),
            ("config", "get", "CP1", "--json", *cli.db),
            ("config", "diff", "CP1", "--json", *cli.db),
        ):
            shown = await cli.ok(*argv)
            assert SECRET not in shown.out + shown.err
        assert "AuthorizationKey" in (await cli.ok("config", "get", "CP1", *cli.db)).out
        refused = await cli(
            "config", "set", "CP1", "AuthorizationKey", SECRET, "--desired", *cli.db
        )
        assert refused.code == 1 and "write-only" in refused.err and SECRET not in refused.err


async def test_client_errors(app: Application, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KILOWATT_API_TOKEN", raising=False)
    url = f"http://127.0.0.1:{app.gateway.port}"
    no_token = await cli("config", "apply", "CP1", "--url", url)
    assert no_token.code == 2 and "KILOWATT_API_TOKEN" in no_token.err
    bad_token = await cli("config", "apply", "CP1", "--url", url, "--token", "wrong")
    assert bad_token.code == 1 and "--token" in bad_token.err
    # Not even a header value: a usage error, not a crash.
    foreign = await cli(
        "config", "set", "CP1", "HeartbeatInterval", "60", "--url", url, "--token", "kw_€"
    )
    assert foreign.code == 2 and "not one Kilowatt made" in foreign.err
    unknown = await cli("config", "apply", "NOPE", *cli.remote)
    assert unknown.code == 1 and "not registered" in unknown.err
    await app.services.charge_points.register("OFF1")
    offline = await cli("config", "set", "OFF1", "HeartbeatInterval", "60", *cli.remote)
    assert offline.code == 1 and "not connected" in offline.err
    closed = await cli("config", "refresh", "OFF1", "--url", "http://127.0.0.1:9", "--token", "t")
    assert closed.code == 1 and "cannot reach" in closed.err
    missing = await cli("config", "get", "NOPE", *cli.db)
    assert missing.code == 1 and "not registered" in missing.err


async def test_keys(cli: Cli) -> None:
    listed = await cli.ok("config", "keys", "--profile", "SmartCharging", *cli.db)
    assert "ChargeProfileMaxStackLevel" in listed.out and "HeartbeatInterval" not in listed.out
    keys = json.loads((await cli.ok("config", "keys", "--json", *cli.db)).out)
    authorization_key = next(k for k in keys if k["key"] == "AuthorizationKey")
    assert authorization_key["access"] == "W"
