"""``kilowatt api-token`` and ``kilowatt call``, run in-process through ``kilowatt.cli.main``.

``kilowatt call`` talks to a Kilowatt started in the test (``app.start()`` on a free
port) with a raw websockets charge point connected to it; the command runs in a
thread so that the server keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from kilowatt.app import Application, Services, build_services, create_app, prepare_database
from kilowatt.config import load_settings
from kilowatt.domain.models import ApiToken
from kilowatt.services.api_tokens import Role
from tests.cli_runner import Cli, fresh_workdir

T = TypeVar("T")

TIMEOUT = 5.0
CALL_TIMEOUT = 2.0
TOKEN = re.compile(r"^kw_[A-Za-z0-9_-]{43}$")


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, and no KILOWATT_* setting from the environment."""
    return fresh_workdir(tmp_path, monkeypatch, "KILOWATT_API_TOKEN")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys, thread_timeout=CALL_TIMEOUT + 3 * TIMEOUT)


def with_services(url: str, work: Callable[[Services], Awaitable[T]]) -> T:
    async def run() -> T:
        services = build_services(load_settings(database_url=url))
        try:
            await prepare_database(services, migrate=services.store.dialect == "sqlite")
            return await work(services)
        finally:
            await services.store.close()

    return asyncio.run(run())


def verify(url: str, secret: str) -> ApiToken | None:
    return with_services(url, lambda services: services.tokens.verify(secret))


# ----------------------------------------------------------------- api-token


def test_create_prints_the_secret_once(cli: Cli, engine_url: str) -> None:
    db = ("--database-url", engine_url)
    result = cli.ok("api-token", "create", "ops", *db)
    secret = result.out.strip()
    assert TOKEN.match(secret), result.out
    assert result.out == secret + "\n"  # stdout holds only the secret, for scripts
    assert "API token 'ops' created (role admin)" in result.err
    assert "it cannot be shown again" in result.err
    assert "kilowatt api-token revoke ops" in result.err
    token = verify(engine_url, secret)
    assert token is not None and token.name == "ops" and token.role == "admin"

    reader = cli.ok("api-token", "create", "dashboard", "--role", "read", *db)
    assert "(role read)" in reader.err
    token = verify(engine_url, reader.out.strip())
    assert token is not None and token.role == "read"

    # The secret is never shown again: not by list, not in JSON.
    listed = cli.ok("api-token", "list", *db).out + cli.ok("api-token", "list", "--json", *db).out
    assert secret not in listed and reader.out.strip() not in listed
    assert "kw_" not in listed


def test_create_errors(cli: Cli, engine_url: str) -> None:
    db = ("--database-url", engine_url)
    cli.ok("api-token", "create", "ops", *db)
    result = cli("api-token", "create", "ops", *db)
    assert result.code == 1 and result.out == ""
    assert "an API token named 'ops' exists already" in result.err
    assert "choose another name" in result.err

    result = cli("api-token", "create", "x", "--role", "root", *db)
    assert result.code == 2 and "invalid choice: 'root'" in result.err
    result = cli("api-token", "create", "", *db)
    assert result.code == 2 and "a token name has 1-100 characters" in result.err
    result = cli("api-token", "create", "n" * 101, *db)
    assert result.code == 2
    result = cli("api-token", "create", " ops", *db)
    assert result.code == 2 and "without spaces at its ends" in result.err


def test_list_and_revoke(cli: Cli, engine_url: str) -> None:
    db = ("--database-url", engine_url)
    assert "No API tokens yet" in cli.ok("api-token", "list", *db).out
    secret = cli.ok("api-token", "create", "ops", *db).out.strip()
    cli.ok("api-token", "create", "dashboard", "--role", "read", *db)

    lines = cli.ok("api-token", "list", *db).out.splitlines()
    assert lines[0].split() == ["Name", "Role", "Created", "Revoked"]
    assert re.match(r"^ops\s+admin\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+-$", lines[1])
    assert re.match(r"^dashboard\s+read\s+\S+Z\s+-$", lines[2])

    assert cli.ok("api-token", "revoke", "ops", *db).out == "API token 'ops' revoked\n"
    assert verify(engine_url, secret) is None
    listed = json.loads(cli.ok("api-token", "list", "--json", *db).out)
    assert [(t["name"], t["role"], t["revoked_at"] is not None) for t in listed] == [
        ("ops", "admin", True),
        ("dashboard", "read", False),
    ]
    assert set(listed[0]) == {"name", "role", "created_at", "revoked_at"}

    result = cli("api-token", "revoke", "ops", *db)
    assert result.code == 1 and "API token 'ops' is revoked already" in result.err
    result = cli("api-token", "revoke", "nobody", *db)
    assert result.code == 1 and "there is no API token named 'nobody'" in result.err


def test_api_token_uses_the_default_database_like_serve(cli: Cli, workdir: Path) -> None:
    secret = cli.ok("api-token", "create", "ops").out.strip()
    assert (workdir / "kilowatt.db").is_file()
    token = verify(f"sqlite:///{workdir}/kilowatt.db", secret)
    assert token is not None and token.name == "ops"


def test_help(cli: Cli) -> None:
    assert "create" in cli.ok("api-token", "--help").out
    out = cli.ok("call", "--help").out
    for option in ("--url", "--token", "--timeout", "KILOWATT_API_TOKEN"):
        assert option in out
    assert cli("api-token").code == 2


# ---------------------------------------------------------------------- call


@dataclass
class ChargePoint:
    """A raw websockets charge point that answers the CALLs it gets as told.

    ``answers``: action -> CALLRESULT payload, ``(code, description)`` for a
    CALLERROR, or None for no answer at all. Other actions (the Central System may
    ask things after a boot, e.g. GetConfiguration) get a NotSupported CALLERROR.
    """

    ws: ClientConnection
    answers: dict[str, Any]
    received: list[list[Any]] = field(default_factory=list)

    def calls(self, action: str) -> list[Any]:
        """The payloads of the ``action`` CALLs received."""
        return [frame[3] for frame in self.received if frame[2] == action]

    async def serve(self) -> None:
        async for message in self.ws:
            frame = orjson.loads(message)
            if frame[0] != 2:
                continue
            self.received.append(frame)
            answer = self.answers.get(frame[2], ("NotSupported", "not in this test"))
            if answer is None:
                continue  # no answer at all: the server's call times out
            if isinstance(answer, tuple):  # (code, description): a CALLERROR
                reply: list[Any] = [4, frame[1], answer[0], answer[1], {}]
            else:
                reply = [3, frame[1], answer]
            await self.ws.send(orjson.dumps(reply).decode())


@dataclass
class Served:
    app: Application
    url: str
    admin: str
    reader: str


@pytest.fixture
async def served(engine_url: str) -> AsyncIterator[Served]:
    app = create_app(
        load_settings(
            database_url=engine_url,
            port=0,
            ping_interval=0,
            call_timeout=CALL_TIMEOUT,
            shutdown_timeout=1.0,
            log_level="warning",
        )
    )
    await app.start()
    try:
        _, admin = await app.services.tokens.create("operator", Role.ADMIN)
        _, reader = await app.services.tokens.create("dashboard", Role.READ)
        yield Served(app, f"http://127.0.0.1:{app.gateway.port}", admin, reader)
    finally:
        async with asyncio.timeout(10):
            await app.stop()


@contextlib.asynccontextmanager
async def charge_point(
    app: Application, charge_point_id: str = "CP1"
) -> AsyncIterator[ChargePoint]:
    """Registered, connected and booted (Accepted); answers Reset (Accepted) and
    UnlockConnector (a CALLERROR), never ClearCache."""
    await app.services.charge_points.register(charge_point_id)
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(
            f"ws://127.0.0.1:{app.gateway.port}{app.settings.ocpp_path}{charge_point_id}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            ping_interval=None,
        )
        await ws.send(
            orjson.dumps(
                [
                    2,
                    "boot",
                    "BootNotification",
                    {"chargePointVendor": "Acme", "chargePointModel": "R"},
                ]
            ).decode()
        )
        while True:
            boot = orjson.loads(await ws.recv())
            if boot[0] != 2:
                break
            refusal = [4, boot[1], "NotSupported", "not in this test", {}]
            await ws.send(orjson.dumps(refusal).decode())
    assert boot[0] == 3 and boot[2]["status"] == "Accepted", boot
    cp = ChargePoint(
        ws,
        {
            "Reset": {"status": "Accepted"},
            "UnlockConnector": ("NotSupported", "no lock on this one"),
            "ClearCache": None,
        },
    )
    task = asyncio.create_task(cp.serve())
    try:
        yield cp
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(TIMEOUT):
            await ws.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_call_prints_the_charge_points_answer(cli: Cli, served: Served) -> None:
    async with charge_point(served.app) as cp:
        result = await cli.in_thread(
            "call", "CP1", "Reset", '{"type": "Soft"}', "--url", served.url, "--token", served.admin
        )
    assert result.code == 0, result
    assert json.loads(result.out) == {"status": "Accepted"}
    assert result.err == ""
    assert cp.calls("Reset") == [{"type": "Soft"}]


async def test_call_takes_the_token_from_the_environment(
    cli: Cli, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILOWATT_API_TOKEN", served.admin)
    async with charge_point(served.app) as cp:
        result = await cli.in_thread(
            "call", "CP1", "Reset", '{"type":"Hard"}', "--url", served.url + "/", "--timeout", "3"
        )
    assert result.code == 0, result
    assert json.loads(result.out) == {"status": "Accepted"}
    assert cp.calls("Reset") == [{"type": "Hard"}]


async def test_call_reports_the_apis_error_message(cli: Cli, served: Served) -> None:
    await served.app.services.charge_points.register("CP2")
    url = ("--url", served.url)
    admin = ("--token", served.admin)
    async with charge_point(served.app):
        cases = [
            (
                ("call", "CP2", "Reset", '{"type": "Soft"}', *url, *admin),
                "kilowatt: charge point 'CP2' is not connected; retry once it has connected",
            ),
            (
                ("call", "CP9", "Reset", '{"type": "Soft"}', *url, *admin),
                "kilowatt: charge point CP9 is not registered",
            ),
            (
                ("call", "CP1", "Reset", '{"type": "Gentle"}', *url, *admin),
                "kilowatt: the Reset payload does not conform to the OCPP 1.6 schema",
            ),
            (
                ("call", "CP1", "Reboot", "{}", *url, *admin),
                "kilowatt: Reboot is not an action the Central System sends",
            ),
            (
                ("call", "CP1", "UnlockConnector", '{"connectorId": 1}', *url, *admin),
                "kilowatt: the charge point answered CALLERROR NotSupported: no lock on this one",
            ),
            (
                ("call", "CP1", "Reset", '{"type": "Soft"}', *url, "--token", served.reader),
                "kilowatt: the token 'dashboard' is read-only; POST needs an admin token",
            ),
            (
                ("call", "CP1", "Reset", '{"type": "Soft"}', *url, "--token", "kw_wrong"),
                "kilowatt: invalid or revoked API token (pass an admin token with --token",
            ),
        ]
        for argv, message in cases:
            result = await cli.in_thread(*argv)
            assert result.code == 1, (argv, result)
            assert result.out == ""
            assert result.err.startswith(message), (argv, result.err)


async def test_call_reports_a_timeout(cli: Cli, served: Served) -> None:
    async with charge_point(served.app) as cp:
        result = await cli.in_thread(
            "call",
            "CP1",
            "ClearCache",
            *("--url", served.url, "--token", served.admin),
            "--timeout",
            "0.5",
        )
    assert result.code == 1, result
    assert result.err == "kilowatt: ClearCache: no answer within 0.5 s\n"
    assert cp.calls("ClearCache") == [{}]


async def test_call_says_when_no_server_answers(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await cli.in_thread(
        "call", "CP1", "Reset", '{"type": "Soft"}', "--url", url, "--token", "kw_x"
    )
    assert result.code == 1
    assert result.err.startswith(f"kilowatt: cannot reach the Kilowatt API at {url}")
    assert "is `kilowatt serve` running? pass --url" in result.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("call", "CP1", "Reset", "{type: Soft}", "--token", "t"), "the payload is not valid JSON"),
        (("call", "CP1", "Reset", '{"type": "Soft"', "--token", "t"), "not valid JSON"),
        (("call", "CP1", "Reset", "[1, 2]", "--token", "t"), "must be a JSON object"),
        (("call", "CP1", "Reset", "{}", "--token", "t", "--timeout", "0"), "--timeout"),
        (("call", "CP1", "Reset", "{}", "--token", "t", "--timeout", "301"), "at most 300"),
        (("call", "CP1", "Reset", "{}"), "no API token: pass --token TOKEN or set"),
        (
            ("call", "CP1", "Reset", "{}", "--token", "kw_é"),
            "the API token is not one Kilowatt made",
        ),
        (("call", "CP1", "Reset", "{}", "--token", "t", "--url", "ftp://x"), "--url 'ftp://x'"),
        (("call", "a/b", "Reset", "{}", "--token", "t"), "without '/'"),
        (("call", "CP1"), "the following arguments are required: ACTION"),
    ],
)
def test_call_usage_errors_exit_2(cli: Cli, argv: tuple[str, ...], message: str) -> None:
    result = cli(*argv)
    assert result.code == 2, result
    assert message in result.err
    assert result.out == ""
