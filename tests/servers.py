"""Throw-away PostgreSQL and Redis servers for tests, on 127.0.0.1 only.

``start_postgres()`` runs ``initdb`` into a temporary directory and starts a
server tuned for speed (no fsync) on a free port — ``start_postgres(durable=True)``
keeps PostgreSQL's durable defaults instead (every commit flushed to disk), which
is what the benchmarks measure; ``start_redis()`` runs
``redis-server`` without persistence. Both honour an environment override
(``KILOWATT_TEST_POSTGRES_URL``, ``KILOWATT_TEST_REDIS_URL``) that points the
tests at an existing server instead. PostgreSQL refuses to run as root, so when
the tests run as root its binaries run as the ``postgres`` user via ``runuser``.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "POSTGRES_DATABASE",
    "PostgresServer",
    "RedisServer",
    "ServerUnavailable",
    "asyncpg_dsn",
    "start_postgres",
    "start_redis",
]

POSTGRES_DATABASE = "kilowatt_test"
POSTGRES_ENV = "KILOWATT_TEST_POSTGRES_URL"
REDIS_ENV = "KILOWATT_TEST_REDIS_URL"
STARTUP_TIMEOUT = 60.0


class ServerUnavailable(RuntimeError):
    """The server binaries are not installed here (the message says how to get them)."""


def _log(message: str) -> None:
    print(f"[tests.servers] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def asyncpg_dsn(url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg takes for a SQLAlchemy URL."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url, count=1)


class _Stoppable:
    """Context-manager plumbing shared by the server handles."""

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------------ PostgreSQL


class PostgresServer(_Stoppable):
    """A running PostgreSQL (or the one the environment names); ``url`` is for asyncpg."""

    def __init__(
        self,
        url: str,
        *,
        directory: Path | None = None,
        pg_ctl: list[str] | None = None,
    ) -> None:
        self.url = url
        self._directory = directory
        self._pg_ctl = pg_ctl  # the pg_ctl command line prefix; None: not ours to stop

    @property
    def managed(self) -> bool:
        """Whether this process started the server (and ``stop`` shuts it down)."""
        return self._pg_ctl is not None

    def stop(self) -> None:
        pg_ctl, directory = self._pg_ctl, self._directory
        self._pg_ctl = self._directory = None
        if pg_ctl is None or directory is None:
            return
        _log("stopping PostgreSQL")
        subprocess.run(
            [*pg_ctl, "stop", "-D", str(directory / "data"), "-m", "immediate", "-w"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=STARTUP_TIMEOUT,
        )
        shutil.rmtree(directory, ignore_errors=True)


def _postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb and pg_ctl, else PATH's."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "createdb")):
            return directory
    initdb = shutil.which("initdb")
    if initdb is not None:
        directory = Path(initdb).parent
        if all((directory / name).is_file() for name in ("pg_ctl", "createdb")):
            return directory
    return None


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=STARTUP_TIMEOUT
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
            f"{result.stdout}{result.stderr}"
        )


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """Start a throw-away PostgreSQL with database ``kilowatt_test`` (or use the override).

    ``durable``: PostgreSQL's own defaults (fsync, synchronous commit, full page
    writes), as a production server runs; otherwise the tests' fast, unsafe ones."""
    override = os.environ.get(POSTGRES_ENV)
    if override:
        _log(f"using PostgreSQL from ${POSTGRES_ENV}")
        return PostgresServer(override)

    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        raise ServerUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
            "or on PATH: install them (Debian/Ubuntu: `apt-get install postgresql`) or set "
            f"{POSTGRES_ENV}=postgresql+asyncpg://USER@HOST:PORT/DB"
        )

    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable(
                "running as root but there is no `postgres` user to run PostgreSQL as: "
                "install the server package (`apt-get install postgresql`) or run as non-root"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ServerUnavailable("running as root but `runuser` (util-linux) is missing")
        prefix = [runuser, "-u", "postgres", "--"]

    directory = Path(tempfile.mkdtemp(prefix="kilowatt-pg-"))
    if owner is not None:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    data = directory / "data"
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl")]
    server = PostgresServer("", directory=directory, pg_ctl=pg_ctl)
    try:
        started = time.monotonic()
        _log(f"initdb {data} ({bin_dir.parent.name}) ...")
        _run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            "initdb",
        )
        port = _start_postgres_on_free_port(pg_ctl, directory, durable=durable)
        _run(
            [
                *prefix,
                str(bin_dir / "createdb"),
                "-h",
                str(directory),
                "-p",
                str(port),
                "-U",
                "postgres",
                POSTGRES_DATABASE,
            ],
            "createdb",
        )
        server.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{POSTGRES_DATABASE}"
        _log(f"PostgreSQL ready on 127.0.0.1:{port} in {time.monotonic() - started:.1f}s")
    except BaseException:
        server.stop()
        raise
    atexit.register(server.stop)  # a crashed test session leaves no server behind
    return server


def _start_postgres_on_free_port(
    pg_ctl: list[str], directory: Path, attempts: int = 3, *, durable: bool = False
) -> int:
    for attempt in range(1, attempts + 1):
        port = _free_port()
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            _run(
                [
                    *pg_ctl,
                    "start",
                    "-w",
                    "-t",
                    str(int(STARTUP_TIMEOUT)),
                    "-D",
                    str(directory / "data"),
                    "-l",
                    str(directory / "postgres.log"),
                    "-o",
                    options,
                ],
                "pg_ctl start",
            )
        except RuntimeError:
            log = directory / "postgres.log"
            if attempt == attempts:
                detail = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"PostgreSQL did not start:\n{detail}") from None
            _log(f"PostgreSQL did not start on port {port}; retrying on another port")
            continue
        return port
    raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------- Redis


class RedisServer(_Stoppable):
    """A running redis-server (or the one the environment names)."""

    def __init__(
        self,
        url: str,
        process: subprocess.Popen[bytes] | None = None,
        output: IO[bytes] | None = None,
    ) -> None:
        self.url = url
        self._process = process
        self._output = output

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis() -> RedisServer:
    """Start a throw-away redis-server without persistence (or use the override)."""
    override = os.environ.get(REDIS_ENV)
    if override:
        _log(f"using Redis from ${REDIS_ENV}")
        return RedisServer(override)
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable(
            "redis-server not found on PATH: install it (Debian/Ubuntu: "
            f"`apt-get install redis-server`) or set {REDIS_ENV}=redis://HOST:PORT/0"
        )
    port = _free_port()
    output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by RedisServer.stop
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
        cwd=tempfile.gettempdir(),
    )
    server = RedisServer(f"redis://127.0.0.1:{port}/0", process, output)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _redis_answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            code = process.poll()
            output.seek(0)
            log = output.read().decode(errors="replace")
            server.stop()
            raise RuntimeError(
                f"redis-server on port {port} did not answer PING (exit code {code}):\n{log}"
            )
        time.sleep(0.02)
    _log(f"Redis ready on 127.0.0.1:{port}")
    atexit.register(server.stop)
    return server
