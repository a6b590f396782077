"""The management commands of ``kilowatt``, run in-process through ``kilowatt.cli.main``.

Every test runs in its own working directory, so the default database
(``sqlite:///kilowatt.db``, as for ``kilowatt serve``) is a fresh file there. Results
are checked through the command output and through the services/store directly.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from kilowatt.app import Services, build_services, prepare_database
from kilowatt.cli import main
from kilowatt.config import load_settings
from kilowatt.domain.models import (
    AuthorizationStatus,
    BootInfo,
    ChargePoint,
    IdTag,
    Registration,
    TransactionState,
)
from kilowatt.gateway.auth import verify_password
from kilowatt.services.charge_points import StatusReport
from kilowatt.services.transactions import StopRequest
from kilowatt.store.sql.migrate import head_revision
from tests.cli_runner import Cli, fresh_workdir
from tests.servers import asyncpg_dsn

T = TypeVar("T")

HEAD = head_revision()
CSV_HEADER = "id_tag,status,expiry_date,parent_id_tag,owner,note,max_concurrent_transactions"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, and no KILOWATT_* setting from the environment."""
    return fresh_workdir(tmp_path, monkeypatch, "NO_COLOR")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def with_services(work: Callable[[Services], Awaitable[T]], url: str | None = None) -> T:
    """Run ``work`` on the services of the default database (or ``url``)."""

    async def run() -> T:
        settings = load_settings(database_url=url) if url else load_settings()
        services = build_services(settings)
        try:
            await prepare_database(services, migrate=services.store.dialect == "sqlite")
            return await work(services)
        finally:
            await services.store.close()

    return asyncio.run(run())


def charge_point(charge_point_id: str, url: str | None = None) -> ChargePoint | None:
    return with_services(lambda services: services.charge_points.get(charge_point_id), url)


def id_tag(tag: str, url: str | None = None) -> IdTag | None:
    return with_services(lambda services: services.authorization.get(tag), url)


def all_id_tags() -> list[IdTag]:
    return with_services(lambda services: services.authorization.list_id_tags())


def password_in(output: str) -> str:
    match = re.search(r"^password: (\S+)$", output, re.MULTILINE)
    assert match is not None, output
    return match.group(1)


# ------------------------------------------------------------------ plumbing


def test_commands_in_one_directory_share_the_default_database(
    cli: Cli, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cli.ok("charge-point", "add", "CP1")
    assert (workdir / "kilowatt.db").is_file()
    listed = cli.ok("charge-point", "list")
    assert re.search(r"^CP1\s+Accepted\s+no\b", listed.out, re.MULTILINE)
    # The services kilowatt serve builds from the same (default) settings see it too.
    point = charge_point("CP1")
    assert point is not None and point.registration is Registration.ACCEPTED

    # Another directory is another database.
    other = tmp_path_factory.mktemp("elsewhere")
    listed = cli.ok("charge-point", "list", "--database-url", f"sqlite:///{other}/x.db")
    assert "No charge points are registered" in listed.out
    assert "CP1" not in listed.out


def test_database_url_comes_from_the_environment_and_the_config_file(
    cli: Cli, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILOWATT_DATABASE_URL", f"sqlite:///{workdir}/env.db")
    cli.ok("charge-point", "add", "FROM-ENV")
    assert (workdir / "env.db").is_file()
    assert not (workdir / "kilowatt.db").exists()
    monkeypatch.delenv("KILOWATT_DATABASE_URL")

    config = workdir / "kilowatt.toml"
    config.write_text(f'database_url = "sqlite:///{workdir}/file.db"\n')
    cli.ok("id-tag", "add", "T1", "--config", str(config))
    assert (workdir / "file.db").is_file()
    tags = cli.json("id-tag", "list", "--config", str(config))
    assert [tag["id_tag"] for tag in tags] == ["T1"]


def test_usage_and_settings_errors_exit_2(cli: Cli, workdir: Path) -> None:
    assert cli().code == 2
    assert cli("charge-point").code == 2
    result = cli("charge-point", "frobnicate")
    assert result.code == 2 and "invalid choice" in result.err
    assert cli("transactions", "show", "abc").code == 2

    result = cli("charge-point", "list", "--config", "missing.toml")
    assert result.code == 2 and "missing.toml" in result.err

    result = cli("charge-point", "list", "--database-url", "mysql://user@host/db")
    assert result.code == 2
    assert "sqlite:///FILE or postgresql+asyncpg://" in result.err

    result = cli("charge-point", "list", "--database-url", "not a url")
    assert result.code == 2 and "invalid database URL" in result.err
    assert not (workdir / "kilowatt.db").exists()


def test_an_unreachable_database_server_exits_1_with_a_hint(cli: Cli) -> None:
    result = cli("charge-point", "list", "--database-url", "postgresql://kw@127.0.0.1:1/kilowatt")
    assert result.code == 1
    assert "database error on postgresql://kw@127.0.0.1:1/kilowatt" in result.err
    assert "--database-url" in result.err


def test_help_and_version_exit_0(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0 and "kilowatt" in result.out
    result = cli("serve", "--help")
    assert result.code == 0 and "--port" in result.out
    for group in ("db", "charge-point", "id-tag", "transactions"):
        result = cli(group, "--help")
        assert result.code == 0, group
    result = cli("id-tag", "import", "--help")
    assert result.code == 0 and CSV_HEADER in result.out.replace("\n", " ").replace(" ", "")


def test_serve_is_unchanged(cli: Cli) -> None:
    result = cli("serve", "--port", "70000")
    assert result.code == 2
    assert "port" in result.err


# ------------------------------------------------------------------------ db


def test_db_current_and_upgrade(cli: Cli, workdir: Path) -> None:
    result = cli.ok("db", "current")
    assert "current revision: none (no database file kilowatt.db yet)" in result.out
    assert "`kilowatt db upgrade`" in result.out
    assert not (workdir / "kilowatt.db").exists()  # looking creates nothing

    result = cli.ok("db", "upgrade")
    assert "database: sqlite:///kilowatt.db" in result.out
    assert "revision before: none (empty database)" in result.out
    assert f"revision after:  {HEAD}" in result.out
    assert "upgraded" in result.out

    result = cli.ok("db", "current")
    assert f"current revision: {HEAD}" in result.out
    assert "up to date" in result.out

    result = cli.ok("db", "upgrade")
    assert f"revision before: {HEAD}" in result.out
    assert "already up to date" in result.out


def test_db_current_on_an_empty_sqlite_file(cli: Cli, workdir: Path) -> None:
    (workdir / "empty.db").touch()
    result = cli.ok("db", "current", "--database-url", "sqlite:///empty.db")
    assert "current revision: none (empty database)" in result.out
    assert "run `kilowatt db upgrade`" in result.out


# --------------------------------------------------------------- charge-point


def test_charge_point_add_defaults(cli: Cli) -> None:
    result = cli.ok("charge-point", "add", "CP1")
    assert "charge point 'CP1' added: registration Accepted" in result.out
    assert "password not set" in result.out
    assert "password:" not in result.out
    point = charge_point("CP1")
    assert point is not None
    assert point.registration is Registration.ACCEPTED
    assert point.password_hash is None
    assert point.security_profile is None


def test_charge_point_add_with_options(cli: Cli) -> None:
    result = cli.ok(
        "charge-point",
        "add",
        "CP-2",
        "--description",
        "Garage [left] bay",
        "--password",
        "a-secret-of-16-chars",
        "--security-profile",
        "1",
        "--pending",
    )
    assert "registration Pending, security profile 1, password set" in result.out
    assert result.err == ""
    point = charge_point("CP-2")
    assert point is not None
    assert point.registration is Registration.PENDING
    assert point.description == "Garage [left] bay"
    assert point.security_profile == 1
    assert point.password_hash is not None
    assert "a-secret" not in point.password_hash  # only the hash is stored
    assert verify_password("a-secret-of-16-chars", point.password_hash)


def test_charge_point_add_generates_a_password_once(cli: Cli) -> None:
    result = cli.ok("charge-point", "add", "CP1", "--generate-password")
    password = password_in(result.out)
    assert len(password) == 24 and password.isalnum()
    assert "shown only once" in result.out
    point = charge_point("CP1")
    assert point is not None and point.password_hash is not None
    assert verify_password(password, point.password_hash)
    # Another one is another password, and it is never shown again.
    other = password_in(cli.ok("charge-point", "add", "CP2", "--generate-password").out)
    assert other != password
    assert password not in cli.ok("charge-point", "show", "CP1").out
    assert password not in cli.ok("charge-point", "show", "CP1", "--json").out


def test_charge_point_add_warnings(cli: Cli) -> None:
    result = cli.ok("charge-point", "add", "CP1", "--security-profile", "1")
    assert "no password" in result.err
    assert "`kilowatt charge-point set-password CP1 --generate-password`" in result.err
    result = cli.ok("charge-point", "add", "CP2", "--password", "short")
    assert "16-40 characters" in result.err


def test_charge_point_add_errors(cli: Cli) -> None:
    cli.ok("charge-point", "add", "CP1")
    result = cli("charge-point", "add", "CP1")
    assert result.code == 1
    assert "'CP1' is registered already" in result.err
    assert "`kilowatt charge-point remove CP1`" in result.err

    for bad in ("x" * 49, "a/b", " CP", ""):
        result = cli("charge-point", "add", bad)
        assert result.code == 2, bad
    result = cli("charge-point", "add", "CP9", "--password", "p" * 20, "--generate-password")
    assert result.code == 2 and "not allowed with" in result.err
    assert cli("charge-point", "add", "CP9", "--security-profile", "4").code == 2
    assert cli("charge-point", "add", "CP9", "--password", "").code == 2
    assert charge_point("CP9") is None


def _seed_charge_point_activity() -> None:
    async def work(services: Services) -> None:
        charge_points = services.charge_points
        await charge_points.register("CP1", description="Hall")
        await charge_points.register("CP2", registration=Registration.PENDING)
        await charge_points.connected("CP1", remote_address="10.0.0.5", security_profile=0)
        await charge_points.boot(
            "CP1", BootInfo(vendor="Acme", model="Volt-22", firmware_version="1.4.2")
        )
        await charge_points.status("CP1", StatusReport(0, "Available", "NoError"))
        await charge_points.status("CP1", StatusReport(1, "Available", "NoError"))
        await charge_points.status("CP1", StatusReport(1, "Charging", "NoError"))
        await charge_points.status(
            "CP1", StatusReport(2, "Faulted", "GroundFailure", vendor_id="Acme")
        )

    with_services(work)


def test_charge_point_list(cli: Cli) -> None:
    _seed_charge_point_activity()
    out = cli.ok("charge-point", "list").out
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "Registration",
        "Connected",
        "Last",
        "seen",
        "Vendor/Model",
        "Firmware",
        "Connectors",
    ]
    cp1 = next(line for line in lines if line.startswith("CP1"))
    assert re.search(r"CP1\s+Accepted\s+yes\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+Acme/Volt-22", cp1)
    assert "1.4.2" in cp1
    assert "0:Available, 1:Charging, 2:Faulted/GroundFailure" in cp1
    cp2 = next(line for line in lines if line.startswith("CP2"))
    assert re.match(r"CP2\s+Pending\s+no\s+-", cp2)
    assert "\x1b" not in out  # plain when not a terminal
    assert all(line == line.rstrip() for line in lines)


def test_charge_point_list_json(cli: Cli) -> None:
    assert cli.json("charge-point", "list") == []
    _seed_charge_point_activity()
    points = cli.json("charge-point", "list")
    assert isinstance(points, list)
    assert [point["id"] for point in points] == ["CP1", "CP2"]
    cp1 = points[0]
    assert cp1["registration"] == "Accepted"
    assert cp1["connected"] is True
    assert cp1["remote_address"] == "10.0.0.5"
    assert cp1["vendor"] == "Acme" and cp1["model"] == "Volt-22"
    assert cp1["firmware_version"] == "1.4.2"
    assert cp1["password_set"] is False
    assert "password_hash" not in cp1
    assert cp1["last_seen_at"].endswith("Z")
    assert [(c["connector_id"], c["status"], c["error_code"]) for c in cp1["connectors"]] == [
        (0, "Available", "NoError"),
        (1, "Charging", "NoError"),
        (2, "Faulted", "GroundFailure"),
    ]
    assert points[1]["registration"] == "Pending"
    assert points[1]["connectors"] == []


def test_charge_point_show(cli: Cli) -> None:
    _seed_charge_point_activity()
    out = cli.ok("charge-point", "show", "CP1").out
    assert re.search(r"^Description\s+Hall$", out, re.MULTILINE)
    assert re.search(r"^Security profile\s+default \(0\)$", out, re.MULTILINE)
    assert re.search(r"^Password\s+not set$", out, re.MULTILINE)
    assert re.search(r"^Connected\s+yes since \S+Z from 10\.0\.0\.5$", out, re.MULTILINE)
    assert re.search(r"^Firmware version\s+1\.4\.2$", out, re.MULTILINE)
    assert "Connectors:" in out
    assert re.search(r"^2\s+Faulted\s+GroundFailure\s+-\s+Acme\b", out, re.MULTILINE)
    history = out.split("Recent status notifications")[1]
    statuses = re.findall(r"Z\s+(\d)\s+(\w+)\s+", history)
    assert statuses == [("2", "Faulted"), ("1", "Charging"), ("1", "Available"), ("0", "Available")]

    out = cli.ok("charge-point", "show", "CP2").out
    assert "Connectors: none reported yet" in out
    assert "Recent status notifications: none" in out


def test_charge_point_show_json(cli: Cli) -> None:
    _seed_charge_point_activity()
    for index in range(12):
        with_services(
            lambda services, i=index: services.charge_points.status(
                "CP1", StatusReport(1, "Charging" if i % 2 else "SuspendedEV", "NoError")
            )
        )
    data = cli.json("charge-point", "show", "CP1")
    assert isinstance(data, dict)
    assert data["id"] == "CP1" and data["description"] == "Hall"
    assert len(data["connectors"]) == 3
    history = data["status_history"]
    assert len(history) == 10  # the most recent ten
    assert history[0]["status"] == "Charging" and history[0]["connector_id"] == 1
    assert history[0]["received_at"].endswith("Z")


def test_charge_point_commands_on_an_unknown_id(cli: Cli) -> None:
    cli.ok("charge-point", "add", "CP1")
    for argv in (
        ("show", "NOPE"),
        ("show", "NOPE", "--json"),
        ("remove", "NOPE", "--yes"),
        ("set-password", "NOPE", "--generate-password"),
        ("accept", "NOPE"),
        ("reject", "NOPE"),
        ("set-security-profile", "NOPE", "1"),
    ):
        result = cli("charge-point", *argv)
        assert result.code == 1, argv
        assert result.out == ""
        assert (
            "charge point 'NOPE' is not registered; add it with "
            "`kilowatt charge-point add NOPE`" in result.err
        ), argv


def test_charge_point_remove(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CP1", "CP2", "CP3"):
        cli.ok("charge-point", "add", name)

    # Not a terminal (the test's stdin): no question is asked, nothing is removed.
    result = cli("charge-point", "remove", "CP1")
    assert result.code == 1
    assert "add --yes" in result.err
    assert charge_point("CP1") is not None

    result = cli.ok("charge-point", "remove", "CP1", "--yes")
    assert "charge point 'CP1' removed" in result.out
    assert charge_point("CP1") is None

    monkeypatch.setattr(sys, "stdin", FakeTerminal("n\n"))
    result = cli("charge-point", "remove", "CP2")
    assert result.code == 1
    assert "Remove charge point 'CP2'" in result.err and "[y/N]" in result.err
    assert "not removed" in result.err
    assert charge_point("CP2") is not None

    monkeypatch.setattr(sys, "stdin", FakeTerminal("yes\n"))
    result = cli.ok("charge-point", "remove", "CP2")
    assert "charge point 'CP2' removed" in result.out
    assert charge_point("CP2") is None
    assert charge_point("CP3") is not None


def test_charge_point_set_password(cli: Cli) -> None:
    cli.ok("charge-point", "add", "CP1", "--security-profile", "1")
    result = cli.ok("charge-point", "set-password", "CP1", "--password", "0123456789abcdef")
    assert "password of charge point 'CP1' set" in result.out
    assert "0123456789abcdef" not in result.out
    assert result.err == ""
    point = charge_point("CP1")
    assert point is not None and point.password_hash is not None
    assert verify_password("0123456789abcdef", point.password_hash)

    result = cli.ok("charge-point", "set-password", "CP1", "--generate-password")
    password = password_in(result.out)
    point = charge_point("CP1")
    assert point is not None and point.password_hash is not None
    assert verify_password(password, point.password_hash)
    assert not verify_password("0123456789abcdef", point.password_hash)

    assert cli("charge-point", "set-password", "CP1").code == 2  # which password?

    # A password a charge point with profile 0 never sends: said so.
    cli.ok("charge-point", "add", "CP0")
    result = cli.ok("charge-point", "set-password", "CP0", "--generate-password")
    assert "security profile 1 or 2" in result.err
    assert "`kilowatt charge-point set-security-profile CP0 1`" in result.err


def test_charge_point_accept_and_reject(cli: Cli) -> None:
    cli.ok("charge-point", "add", "CP1", "--pending")
    result = cli.ok("charge-point", "accept", "CP1")
    assert "registration Accepted (was Pending)" in result.out
    point = charge_point("CP1")
    assert point is not None and point.registration is Registration.ACCEPTED

    result = cli.ok("charge-point", "accept", "CP1")
    assert "is Accepted already" in result.out

    result = cli.ok("charge-point", "reject", "CP1")
    assert "registration Rejected (was Accepted)" in result.out
    point = charge_point("CP1")
    assert point is not None and point.registration is Registration.REJECTED


def test_charge_point_set_security_profile(cli: Cli) -> None:
    cli.ok("charge-point", "add", "CP1", "--generate-password")
    for profile in ("3", "2", "1", "0"):
        result = cli.ok("charge-point", "set-security-profile", "CP1", profile)
        assert f"security profile {profile}" in result.out
        assert result.err == ""
        point = charge_point("CP1")
        assert point is not None and point.security_profile == int(profile)

    result = cli.ok("charge-point", "set-security-profile", "CP1", "default")
    assert "security profile default (0)" in result.out
    point = charge_point("CP1")
    assert point is not None and point.security_profile is None

    for bad in ("4", "-1", "one"):
        result = cli("charge-point", "set-security-profile", "CP1", bad)
        assert result.code == 2 and "use 0-3 or default" in result.err

    cli.ok("charge-point", "add", "NOPASS")
    result = cli.ok("charge-point", "set-security-profile", "NOPASS", "2")
    assert "no password, so it cannot connect with security profile 2" in result.err


def test_tables_on_a_terminal_follow_no_color(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("charge-point", "add", "CP1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "160")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)

    def on_terminal() -> str:
        terminal = FakeTerminal()
        monkeypatch.setattr(sys, "stdout", terminal)
        assert main(["charge-point", "list"]) == 0
        return terminal.getvalue()

    coloured = on_terminal()
    assert "CP1" in coloured and "╭" in coloured
    assert "\x1b[32m" in coloured  # Accepted, in green

    monkeypatch.setenv("NO_COLOR", "1")
    plain = on_terminal()
    assert "CP1" in plain
    assert not re.search(r"\x1b\[(3\d|9\d)m", plain)  # no colour codes


# --------------------------------------------------------------------- id-tag


def test_id_tag_add_with_every_option(cli: Cli) -> None:
    cli.ok("id-tag", "add", "PARENT")
    result = cli.ok(
        "id-tag",
        "add",
        "04A2B3C4D5E6F7",
        "--expires",
        "2031-05-06T07:08:09+02:00",
        "--parent",
        "PARENT",
        "--owner",
        "Ann Example",
        "--note",
        "fleet card",
        "--max-concurrent",
        "3",
        "--status",
        "blocked",
    )
    assert "id tag '04A2B3C4D5E6F7' added: Blocked, expires 2031-05-06T05:08:09Z" in result.out
    tag = id_tag("04A2B3C4D5E6F7")
    assert tag is not None
    assert tag.status is AuthorizationStatus.BLOCKED
    assert tag.expiry_date == datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC)
    assert tag.parent_id_tag == "PARENT"
    assert tag.owner == "Ann Example"
    assert tag.note == "fleet card"
    assert tag.max_concurrent_transactions == 3

    default = id_tag("PARENT")
    assert default is not None
    assert default.status is AuthorizationStatus.ACCEPTED
    assert default.expiry_date is None and default.max_concurrent_transactions == 1


def test_id_tag_add_errors(cli: Cli) -> None:
    cli.ok("id-tag", "add", "T1")
    result = cli("id-tag", "add", "T1")
    assert result.code == 1
    assert "'T1' exists already" in result.err and "`kilowatt id-tag remove T1`" in result.err

    assert cli("id-tag", "add", "X" * 21).code == 2
    result = cli("id-tag", "add", "X" * 21)
    assert "at most 20" in result.err
    assert cli("id-tag", "add", "T2", "--expires", "next week").code == 2
    assert cli("id-tag", "add", "T2", "--parent", "P" * 21).code == 2
    assert cli("id-tag", "add", "T2", "--max-concurrent", "0").code == 2
    result = cli("id-tag", "add", "T2", "--status", "ConcurrentTx")
    assert result.code == 2 and "Accepted, Blocked, Expired, Invalid" in result.err
    assert id_tag("T2") is None

    result = cli.ok("id-tag", "add", "OLD", "--expires", "2001-01-01")
    assert "in the past" in result.err


def test_id_tag_list(cli: Cli) -> None:
    assert "No id tags yet" in cli.ok("id-tag", "list").out
    cli.ok("id-tag", "add", "B-TAG", "--owner", "Bob [ops]", "--max-concurrent", "2")
    cli.ok("id-tag", "add", "A-TAG", "--expires", "2001-01-01T00:00:00Z")
    cli.ok("id-tag", "add", "C-TAG", "--status", "Invalid", "--parent", "A-TAG")
    out = cli.ok("id-tag", "list").out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "tag", "Status"]
    assert re.match(r"A-TAG\s+Accepted \(expired\)\s+2001-01-01T00:00:00Z", lines[1])
    assert re.match(r"B-TAG\s+Accepted\s+-\s+-\s+Bob \[ops\]\s+2\s+-$", lines[2])
    assert re.match(r"C-TAG\s+Invalid\s+-\s+A-TAG\s+-\s+1\s+-$", lines[3])

    tags = cli.json("id-tag", "list")
    assert tags == [
        {
            "id_tag": "A-TAG",
            "status": "Accepted",
            "expiry_date": "2001-01-01T00:00:00Z",
            "parent_id_tag": None,
            "owner": None,
            "note": None,
            "max_concurrent_transactions": 1,
            "created_at": tags[0]["created_at"],
        },
        {
            "id_tag": "B-TAG",
            "status": "Accepted",
            "expiry_date": None,
            "parent_id_tag": None,
            "owner": "Bob [ops]",
            "note": None,
            "max_concurrent_transactions": 2,
            "created_at": tags[1]["created_at"],
        },
        {
            "id_tag": "C-TAG",
            "status": "Invalid",
            "expiry_date": None,
            "parent_id_tag": "A-TAG",
            "owner": None,
            "note": None,
            "max_concurrent_transactions": 1,
            "created_at": tags[2]["created_at"],
        },
    ]


def test_id_tag_list_pages_through_many_tags(cli: Cli) -> None:
    tags = [IdTag(f"T{i:05d}") for i in range(2100)]
    with_services(lambda services: services.authorization.import_id_tags(tags))
    listed = cli.json("id-tag", "list")
    assert isinstance(listed, list) and len(listed) == 2100
    exported = cli.ok("id-tag", "export").out.splitlines()
    assert len(exported) == 2101


def test_id_tag_block_unblock_remove(cli: Cli) -> None:
    cli.ok("id-tag", "add", "T1")
    result = cli.ok("id-tag", "block", "T1")
    assert "id tag 'T1': Blocked (was Accepted)" in result.out
    tag = id_tag("T1")
    assert tag is not None and tag.status is AuthorizationStatus.BLOCKED
    assert with_services(lambda s: s.authorization.authorize("T1")).status == "Blocked"
    assert "is Blocked already" in cli.ok("id-tag", "block", "T1").out

    result = cli.ok("id-tag", "unblock", "T1")
    assert "id tag 'T1': Accepted (was Blocked)" in result.out
    tag = id_tag("T1")
    assert tag is not None and tag.status is AuthorizationStatus.ACCEPTED

    result = cli.ok("id-tag", "remove", "T1")
    assert "id tag 'T1' removed" in result.out
    assert id_tag("T1") is None

    for action in ("block", "unblock", "remove"):
        result = cli("id-tag", action, "T1")
        assert result.code == 1, action
        assert "id tag 'T1' is not known; add it with `kilowatt id-tag add T1`" in result.err


def test_id_tag_import(cli: Cli, workdir: Path) -> None:
    cli.ok("id-tag", "add", "EXISTING", "--owner", "before")
    path = workdir / "tags.csv"
    path.write_text(
        "\ufeff"  # a byte order mark, as spreadsheets write it
        f"{CSV_HEADER}\n"
        "CARD-1,,,,,,\n"
        'CARD-2,blocked,2030-01-01T00:00:00Z,CARD-1,Ann,"note, with comma",2\n'
        "\n"
        "EXISTING,Accepted,,,after,,\n",
        encoding="utf-8",
    )
    result = cli.ok("id-tag", "import", str(path))
    assert result.out.strip() == (
        f"imported {path}: 2 added, 0 updated, "
        "1 skipped because they exist already (--replace updates them)"
    )
    card = id_tag("CARD-2")
    assert card is not None
    assert card.status is AuthorizationStatus.BLOCKED
    assert card.expiry_date == datetime(2030, 1, 1, tzinfo=UTC)
    assert card.parent_id_tag == "CARD-1"
    assert card.owner == "Ann"
    assert card.note == "note, with comma"
    assert card.max_concurrent_transactions == 2
    existing = id_tag("EXISTING")
    assert existing is not None and existing.owner == "before"

    result = cli.ok("id-tag", "import", str(path), "--replace")
    assert "0 added, 3 updated" in result.out
    existing = id_tag("EXISTING")
    assert existing is not None and existing.owner == "after"
    assert len(all_id_tags()) == 3


def test_id_tag_import_only_the_id_tag_column(cli: Cli, workdir: Path) -> None:
    (workdir / "ids.csv").write_text("id_tag\nA\nB\n")
    assert "2 added" in cli.ok("id-tag", "import", "ids.csv").out
    assert [tag.id_tag for tag in all_id_tags()] == ["A", "B"]
    assert all(tag.status is AuthorizationStatus.ACCEPTED for tag in all_id_tags())


def test_id_tag_import_reports_every_bad_row_and_writes_nothing(cli: Cli, workdir: Path) -> None:
    (workdir / "bad.csv").write_text(
        f"{CSV_HEADER}\n"
        "GOOD-1,,,,,,\n"  # line 2
        "ABCDEFGHIJKLMNOPQRSTU,,,,,,\n"  # line 3: 21 characters
        ",Accepted,,,,,\n"  # line 4: no id tag
        "GOOD-2,Maybe,someday,,,,0\n"  # line 5: three bad fields
        "GOOD-1,,,,,,\n"  # line 6: repeated
        "\n"
        "GOOD-3,,,,,,,extra\n"  # line 8: too many fields
        "GOOD-4,,,PARENT-TAG-IS-TOO-LONG,,,\n"  # line 9
        "GOOD-5,,,,,,2\n"  # line 10: fine
    )
    result = cli("id-tag", "import", "bad.csv")
    assert result.code == 1
    assert result.out == ""
    assert "nothing was imported from bad.csv" in result.err
    problems = [line.strip() for line in result.err.splitlines()[1:]]
    assert [problem.split(":")[0] for problem in problems] == [
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 8",
        "line 9",
    ]
    assert "21 characters; OCPP 1.6 allows at most 20 (CiString20Type)" in problems[0]
    assert "id_tag is empty" in problems[1]
    assert "status 'Maybe'" in problems[2]
    assert "expiry_date 'someday'" in problems[2]
    assert "max_concurrent_transactions '0'" in problems[2]
    assert "'GOOD-1' is on line 2 already" in problems[3]
    assert "8 fields but the header has 7" in problems[4]
    assert "parent_id_tag" in problems[5]
    # Checked before the database was opened: not even created.
    assert not (workdir / "kilowatt.db").exists()
    cli.ok("db", "upgrade")
    assert cli("id-tag", "import", "bad.csv").code == 1
    assert all_id_tags() == []


def test_id_tag_import_header_and_file_problems(cli: Cli, workdir: Path) -> None:
    (workdir / "header.csv").write_text("id_tag,colour,status,status\nA,red,,\n")
    result = cli("id-tag", "import", "header.csv")
    assert result.code == 1
    assert "line 1: unknown column 'colour'" in result.err
    assert "line 1: column 'status' appears more than once" in result.err

    (workdir / "noheader.csv").write_text("A,Accepted\nB,Blocked\n")
    result = cli("id-tag", "import", "noheader.csv")
    assert result.code == 1 and "no id_tag column" in result.err

    (workdir / "empty.csv").write_text("")
    result = cli("id-tag", "import", "empty.csv")
    assert result.code == 1 and "the file is empty" in result.err

    (workdir / "latin1.csv").write_bytes(b"id_tag,owner\nA,J\xfcrgen\n")
    result = cli("id-tag", "import", "latin1.csv")
    assert result.code == 1 and "save it as UTF-8" in result.err

    result = cli("id-tag", "import", "missing.csv")
    assert result.code == 1 and "cannot read missing.csv" in result.err

    (workdir / "header-only.csv").write_text(CSV_HEADER + "\n")
    assert "nothing imported" in cli.ok("id-tag", "import", "header-only.csv").out
    assert all_id_tags() == []


def test_id_tag_import_from_stdin(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("id_tag,status\nS1,Blocked\n"))
    assert "1 added" in cli.ok("id-tag", "import", "-").out
    tag = id_tag("S1")
    assert tag is not None and tag.status is AuthorizationStatus.BLOCKED


def test_id_tag_export_round_trip(cli: Cli, workdir: Path) -> None:
    cli.ok("id-tag", "add", "P1")
    cli.ok(
        "id-tag",
        "add",
        "T1",
        "--expires",
        "2030-02-03T04:05:06Z",
        "--parent",
        "P1",
        "--owner",
        'Ann "A", Example',
        "--note",
        "two\nlines",
        "--max-concurrent",
        "4",
        "--status",
        "Expired",
    )
    out = cli.ok("id-tag", "export").out
    lines = out.splitlines()
    assert lines[0] == CSV_HEADER
    assert lines[1] == "P1,Accepted,,,,,1"
    assert lines[2] == 'T1,Expired,2030-02-03T04:05:06Z,P1,"Ann ""A"", Example","two'

    result = cli.ok("id-tag", "export", "tags.csv")
    assert "exported 2 id tags to tags.csv" in result.out
    assert (workdir / "tags.csv").read_text() == out

    before = all_id_tags()
    cli.ok("id-tag", "remove", "T1")
    cli.ok("id-tag", "remove", "P1")
    assert "2 added" in cli.ok("id-tag", "import", "tags.csv").out
    after = all_id_tags()
    assert [
        (t.id_tag, t.status, t.expiry_date, t.parent_id_tag, t.owner, t.note) for t in after
    ] == [(t.id_tag, t.status, t.expiry_date, t.parent_id_tag, t.owner, t.note) for t in before]

    result = cli("id-tag", "export", str(workdir / "no" / "such" / "dir.csv"))
    assert result.code == 1 and "cannot write" in result.err


# --------------------------------------------------------------- transactions


T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _seed_transactions() -> dict[str, int]:
    def at(minutes: int) -> datetime:
        return T0.replace(minute=minutes)

    async def work(services: Services) -> dict[str, int]:
        await services.charge_points.register("CP1")
        await services.charge_points.register("CP2")
        await services.authorization.add(IdTag("TAG-A", max_concurrent_transactions=5))
        tx = services.transactions
        done = await tx.start(
            "CP1", connector_id=1, id_tag="TAG-A", meter_start=1000, timestamp=at(0)
        )
        await tx.meter_values(
            "CP1",
            connector_id=1,
            transaction_id=done.transaction_id,
            meter_value=[
                {
                    "timestamp": "2026-03-01T08:10:00Z",
                    "sampledValue": [
                        {"value": "4500", "measurand": "Energy.Active.Import.Register"},
                        {"value": "11.04", "measurand": "Power.Active.Import", "unit": "kW"},
                    ],
                }
            ],
        )
        await tx.stop(
            "CP1",
            StopRequest(
                transaction_id=done.transaction_id,
                meter_stop=13345,
                timestamp=at(30),
                id_tag="TAG-A",
                reason="Local",
            ),
        )
        abandoned = await tx.start(
            "CP2", connector_id=1, id_tag="TAG-B", meter_start=0, timestamp=at(5)
        )
        active = await tx.start(
            "CP2", connector_id=1, id_tag="TAG-A", meter_start=50, timestamp=at(40)
        )
        await tx.stop(
            "CP2",
            StopRequest(transaction_id=999, meter_stop=77, timestamp=at(45), reason="PowerLoss"),
        )
        return {
            "completed": done.transaction_id,
            "abandoned": abandoned.transaction_id,
            "active": active.transaction_id,
        }

    return with_services(work)


def test_transactions_list(cli: Cli) -> None:
    assert "No transactions match." in cli.ok("transactions", "list").out
    ids = _seed_transactions()
    out = cli.ok("transactions", "list").out
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "Charge",
        "point",
        "Connector",
        "ID",
        "tag",
        "Start",
        "Stop",
        "Energy",
        "kWh",
        "State",
        "Flags",
    ]
    rows = {int(line.split()[0]): line for line in lines[1:]}
    assert list(rows) == [ids["active"], ids["abandoned"], ids["completed"]]  # newest first
    assert re.match(
        rf"{ids['completed']}\s+CP1\s+1\s+TAG-A\s+2026-03-01T08:00:00Z\s+"
        r"2026-03-01T08:30:00Z\s+12\.345\s+completed\s+-$",
        rows[ids["completed"]],
    )
    assert re.search(
        r"CP2\s+1\s+TAG-B\s+2026-03-01T08:05:00Z\s+2026-03-01T08:40:00Z\s+-\s+abandoned\s+abandoned$",
        rows[ids["abandoned"]],
    )
    assert re.search(r"2026-03-01T08:40:00Z\s+-\s+-\s+active\s+-$", rows[ids["active"]])


def test_transactions_list_filters_and_json(cli: Cli) -> None:
    ids = _seed_transactions()

    def listed(*argv: str) -> list[int]:
        data = cli.json("transactions", "list", *argv)
        assert isinstance(data, list)
        return [item["id"] for item in data]

    assert listed() == [ids["active"], ids["abandoned"], ids["completed"]]
    assert listed("--charge-point", "CP1") == [ids["completed"]]
    assert listed("--id-tag", "TAG-A") == [ids["active"], ids["completed"]]
    assert listed("--state", "active") == [ids["active"]]
    assert listed("--state", "abandoned") == [ids["abandoned"]]
    assert listed("--state", "completed", "--charge-point", "CP2") == []
    assert listed("--since", "2026-03-01T08:05:00Z") == [ids["active"], ids["abandoned"]]
    assert listed("--until", "2026-03-01T08:05:00Z") == [ids["completed"]]
    assert listed("--since", "2026-03-01T09:06:00+01:00", "--until", "2026-03-01T08:41Z") == [
        ids["active"]
    ]
    assert listed("--limit", "1") == [ids["active"]]

    result = cli("transactions", "list", "--limit", "2")
    assert "Showing the newest 2" in result.err

    data = cli.json("transactions", "list", "--charge-point", "CP1")
    assert data == [
        {
            "id": ids["completed"],
            "charge_point_id": "CP1",
            "connector_id": 1,
            "id_tag": "TAG-A",
            "start_status": "Accepted",
            "state": "completed",
            "started_at": "2026-03-01T08:00:00Z",
            "meter_start": 1000,
            "stopped_at": "2026-03-01T08:30:00Z",
            "meter_stop": 13345,
            "energy_wh": 12345,
            "stop_reason": "Local",
            "stop_id_tag": "TAG-A",
            "reservation_id": None,
            "flags": [],
            "created_at": data[0]["created_at"],
        }
    ]

    assert cli("transactions", "list", "--state", "paused").code == 2
    assert cli("transactions", "list", "--since", "yesterday").code == 2
    assert cli("transactions", "list", "--limit", "0").code == 2
    result = cli("transactions", "list", "--since", "2026-03-02T00:00:00Z", "--until", "2026-03-01")
    assert result.code == 2 and "--since must be earlier than --until" in result.err


def test_transactions_show(cli: Cli) -> None:
    ids = _seed_transactions()
    out = cli.ok("transactions", "show", str(ids["completed"])).out
    assert re.search(r"^Charge point\s+CP1$", out, re.MULTILINE)
    assert re.search(r"^Energy \(kWh\)\s+12\.345$", out, re.MULTILINE)
    assert re.search(r"^Stop reason\s+Local$", out, re.MULTILINE)
    assert "Meter values (2):" in out
    assert re.search(
        r"^2026-03-01T08:10:00Z\s+Energy\.Active\.Import\.Register\s+-\s+Outlet\s+"
        r"Sample\.Periodic\s+4500\s+Wh$",
        out,
        re.MULTILINE,
    )
    assert re.search(r"Power\.Active\.Import\s+.*11\.04\s+kW$", out, re.MULTILINE)

    out = cli.ok("transactions", "show", str(ids["active"])).out
    assert re.search(r"^State\s+active$", out, re.MULTILINE)
    assert "Meter values: none" in out

    data = cli.json("transactions", "show", str(ids["completed"]))
    assert isinstance(data, dict)
    assert data["id"] == ids["completed"] and data["energy_wh"] == 12345
    assert [(s["measurand"], s["value"], s["unit"]) for s in data["meter_values"]] == [
        ("Energy.Active.Import.Register", "4500", "Wh"),
        ("Power.Active.Import", "11.04", "kW"),
    ]
    assert data["meter_values"][0]["timestamp"] == "2026-03-01T08:10:00Z"

    result = cli("transactions", "show", "424242")
    assert result.code == 1
    assert "transaction 424242 does not exist" in result.err
    assert "`kilowatt transactions list`" in result.err


def test_transactions_unknown_stops(cli: Cli) -> None:
    assert "No StopTransaction for an unknown" in cli.ok("transactions", "unknown-stops").out
    _seed_transactions()
    out = cli.ok("transactions", "unknown-stops").out
    assert re.search(
        r"^\S+Z\s+CP2\s+999\s+-\s+77\s+2026-03-01T08:45:00Z\s+PowerLoss$", out, re.MULTILINE
    )
    data = cli.json("transactions", "unknown-stops")
    assert isinstance(data, list) and len(data) == 1
    assert data[0]["charge_point_id"] == "CP2"
    assert data[0]["transaction_id"] == 999
    assert data[0]["meter_stop"] == 77
    assert data[0]["timestamp"] == "2026-03-01T08:45:00Z"
    assert data[0]["reason"] == "PowerLoss"


def test_transactions_seen_by_the_services_match_the_cli(cli: Cli) -> None:
    ids = _seed_transactions()
    stored = with_services(lambda services: services.transactions.get(ids["abandoned"]))
    assert stored is not None and stored.state is TransactionState.ABANDONED
    data = cli.json("transactions", "show", str(ids["abandoned"]))
    assert isinstance(data, dict)
    assert data["state"] == stored.state.value == "abandoned"
    assert data["flags"] == list(stored.flags) == ["abandoned"]


# ----------------------------------------------------------------- PostgreSQL


@pytest.fixture
def fresh_postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server (dropped afterwards)."""
    try:
        server_url: str = request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py provides no postgres_url fixture")
    name = f"kilowatt_cli_{uuid.uuid4().hex[:12]}"
    dsn = asyncpg_dsn(server_url)

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except asyncpg.InsufficientPrivilegeError:
        pytest.skip("the PostgreSQL test user may not create databases")
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_postgresql_needs_db_upgrade_then_works(
    cli: Cli, workdir: Path, fresh_postgres_url: str
) -> None:
    url = ("--database-url", fresh_postgres_url)
    # Not migrated automatically (unlike SQLite): every command says what to do.
    result = cli("charge-point", "list", *url)
    assert result.code == 1
    assert "the database schema is at revision none" in result.err
    assert "run `kilowatt db upgrade` with the same database URL" in result.err

    result = cli.ok("db", "current", *url)
    assert "current revision: none (empty database)" in result.out
    assert "out of date" in result.out

    result = cli.ok("db", "upgrade", *url)
    assert "revision before: none (empty database)" in result.out
    assert f"revision after:  {HEAD}" in result.out
    assert "postgresql+asyncpg://" in result.out
    assert f"current revision: {HEAD}" in cli.ok("db", "current", *url).out

    password = password_in(cli.ok("charge-point", "add", "PG-1", "--generate-password", *url).out)
    cli.ok("charge-point", "accept", "PG-1", *url)
    cli.ok("id-tag", "add", "PG-TAG", "--owner", "pg", *url)
    (workdir / "tags.csv").write_text("id_tag,status\nPG-2,Blocked\nPG-3,\n")
    assert "2 added" in cli.ok("id-tag", "import", "tags.csv", *url).out
    cli.ok("id-tag", "block", "PG-TAG", *url)

    points = cli.json("charge-point", "list", *url)
    assert isinstance(points, list) and [p["id"] for p in points] == ["PG-1"]
    tags = cli.json("id-tag", "list", *url)
    assert isinstance(tags, list)
    assert [(t["id_tag"], t["status"]) for t in tags] == [
        ("PG-2", "Blocked"),
        ("PG-3", "Accepted"),
        ("PG-TAG", "Blocked"),
    ]
    assert cli.json("transactions", "list", *url) == []

    point = charge_point("PG-1", fresh_postgres_url)
    assert point is not None and point.password_hash is not None
    assert verify_password(password, point.password_hash)
    tag = id_tag("PG-TAG", fresh_postgres_url)
    assert tag is not None and tag.owner == "pg"

    cli.ok("charge-point", "remove", "PG-1", "--yes", *url)
    assert charge_point("PG-1", fresh_postgres_url) is None
    assert not (workdir / "kilowatt.db").exists()  # nothing went to the default SQLite
