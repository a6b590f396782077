"""Property-based fuzzing of the operator API from its own OpenAPI document.

Schemathesis generates valid and invalid requests for every operation of
``/api/openapi.json`` and sends them to a real Kilowatt (SQLite database, real
socket on 127.0.0.1) with an admin token. Whatever it sends, the API must never
answer 5xx.

Remote control is fuzzed too, with no charge point connected: there the answers are
404 (unknown charge point or action), 409 (registered, not connected) or 422, never
the 502/504 that describe a connected charge point's behaviour. So every 5xx is a
server error.

The app runs on its own event loop in a background thread; the fuzzer's requests
are blocking (``requests``) and come from the test thread.

The run is derandomized so that CI sees the same inputs every time; set
``KILOWATT_FUZZ_RANDOM=1`` (and optionally ``KILOWATT_FUZZ_EXAMPLES=200``, examples per
operation and mode) to explore new inputs locally.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from kilowatt.app import Application, create_app
from kilowatt.config import load_settings
from kilowatt.services.api_tokens import Role

START_TIMEOUT = 15.0
# Examples per operation. Generating invalid requests costs schemathesis several
# times more than valid ones, hence fewer: the whole file stays well under a minute.
_EXAMPLES = os.environ.get("KILOWATT_FUZZ_EXAMPLES")
MAX_EXAMPLES = {
    GenerationMode.POSITIVE: int(_EXAMPLES or 20),
    GenerationMode.NEGATIVE: int(_EXAMPLES or 10),
}
RANDOM = os.environ.get("KILOWATT_FUZZ_RANDOM") == "1"
REGISTERED = ("CP1", "CP2")  # registered, never connected


@dataclass
class ServedKilowatt:
    """Kilowatt served from a background thread with its own event loop."""

    database_url: str
    port: int = 0
    admin_token: str = ""
    _ready: threading.Event = field(default_factory=threading.Event)
    _failure: BaseException | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> ServedKilowatt:
        self._thread = threading.Thread(target=self._run, name="kilowatt-fuzz", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"Kilowatt did not start within {START_TIMEOUT} s")
        if self._failure is not None:
            raise RuntimeError("Kilowatt did not start") from self._failure
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)
            assert not self._thread.is_alive(), "Kilowatt did not stop"
        if self._failure is not None:
            raise RuntimeError("Kilowatt failed while serving") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app: Application = create_app(
            load_settings(
                port=0,
                database_url=self.database_url,
                ping_interval=0,
                call_timeout=2,
                strict_outgoing=True,
                shutdown_timeout=1.0,
                log_level="error",
            )
        )
        await app.start()
        try:
            _, self.admin_token = await app.services.tokens.create("fuzz-admin", Role.ADMIN)
            for charge_point_id in REGISTERED:
                await app.services.charge_points.register(charge_point_id)
            self.port = app.gateway.port
            self._ready.set()
            await self._stop.wait()
        finally:
            await app.stop()


@pytest.fixture(scope="module")
def kilowatt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedKilowatt]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    with ServedKilowatt(f"sqlite:///{directory}/k.db") as served:
        yield served


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # loopback only: never route through a proxy
        yield session


@pytest.fixture(scope="module")
def base_url(kilowatt: ServedKilowatt) -> str:
    return f"http://127.0.0.1:{kilowatt.port}"


@pytest.fixture(scope="module")
def document(base_url: str, http: requests.Session) -> dict[str, Any]:
    """The OpenAPI document exactly as the running app serves it."""
    response = http.get(f"{base_url}/api/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    served: dict[str, Any] = response.json()
    assert served["paths"], "the OpenAPI document lists no paths"
    return served


def streaming_paths(document: dict[str, Any]) -> set[str]:
    """Paths that answer an endless ``text/event-stream``: a fuzzer's request would
    never complete, so they are left to their own tests."""
    return {
        path
        for path, operations in document["paths"].items()
        for operation in operations.values()
        if "text/event-stream" in operation.get("responses", {}).get("200", {}).get("content", {})
    }


def fuzz_operation(operation: Any, mode: GenerationMode, send: Callable[[Any], None]) -> None:
    """Send generated cases of one operation; raise on the first failure."""

    @settings(
        max_examples=MAX_EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        # No shrinking: a failing run stays as short as a passing one, and the report
        # carries the failing request as a curl command anyway.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        send(case)

    run()


# Schemathesis' own pytest integration is not used: its lazy loader (``from_fixture``)
# does not run under pytest 9, and an eagerly loaded document could differ from the
# served one (routes mounted at start-up). The operations are fuzzed one by one from
# the served document instead, and every failing operation is reported.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(
    kilowatt: ServedKilowatt,
    base_url: str,
    http: requests.Session,
    document: dict[str, Any],
    mode: GenerationMode,
) -> None:
    schema = schemathesis.openapi.from_dict(document)
    skipped = streaming_paths(document)
    headers = {"Authorization": f"Bearer {kilowatt.admin_token}"}

    def send(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=base_url,
            session=http,
            headers=headers,
            checks=[not_a_server_error],
            timeout=10,
        )

    fuzzed: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        ok = getattr(result, "ok", None)
        if ok is None:  # an Err: schemathesis cannot use this part of the document
            failures.append(f"unusable operation: {result.err()}")
            continue
        operation = ok()
        if operation.path in skipped:
            continue
        fuzzed.append(operation.label)
        try:
            fuzz_operation(operation, mode, send)
        except Unsatisfiable:
            # Negative mode: nothing in this operation can be made invalid.
            continue
        except Exception as exc:
            failures.append(f"{operation.label}:\n{exc}")
    assert fuzzed, "no operation was fuzzed"
    assert not failures, f"{len(failures)} of {len(fuzzed)} operations answered 5xx:\n\n" + (
        "\n\n".join(failures)
    )


def test_the_document_describes_remote_control(document: dict[str, Any]) -> None:
    paths = document["paths"]
    prefix = "/api/v1/charge-points/{charge_point_id}"
    for suffix in (
        "/calls/{action}",
        "/remote-start",
        "/remote-stop",
        "/reset",
        "/unlock",
        "/availability",
        "/clear-cache",
        "/trigger",
        "/data-transfer",
    ):
        assert "post" in paths[prefix + suffix], suffix


def integer_parameters(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(path, location, name)`` of every integer path or query parameter of a GET."""
    skipped = streaming_paths(document)
    found = []
    for path, operations in document["paths"].items():
        if path in skipped or "get" not in operations:
            continue
        for parameter in operations["get"].get("parameters", []):
            schema_ = parameter.get("schema", {})
            types = {schema_.get("type")} | {
                option.get("type") for option in schema_.get("anyOf", [])
            }
            if "integer" in types:
                found.append((path, parameter["in"], parameter["name"]))
    return found


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1], ids=["2**63", "-2**63-1"])
def test_integer_beyond_64_bits_is_not_a_server_error(
    kilowatt: ServedKilowatt,
    base_url: str,
    http: requests.Session,
    document: dict[str, Any],
    value: int,
) -> None:
    """The first integers a 64-bit database column cannot hold, in every integer
    parameter of every GET: refused (422) or answered (e.g. an empty page), never a
    500 from the database driver."""
    headers = {"Authorization": f"Bearer {kilowatt.admin_token}"}
    parameters = integer_parameters(document)
    assert parameters, "no GET has an integer parameter"
    failures = []
    for path, location, name in parameters:
        url, params = path, {}
        for other in document["paths"][path]["get"].get("parameters", []):
            if other["in"] == "path" and other["name"] != name:
                url = url.replace("{" + other["name"] + "}", REGISTERED[0])
        if location == "path":
            url = url.replace("{" + name + "}", str(value))
        else:
            params[name] = str(value)
        response = http.get(base_url + url, params=params, headers=headers, timeout=10)
        if response.status_code >= 500:
            failures.append(f"GET {url} {params} -> {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)
