"""Transactions per second, end to end, with every write committed before its answer.

Starts `kilowatt serve` on a fresh database — SQLite (a new file) and PostgreSQL (a
throw-away server from the Debian packages with PostgreSQL's durable defaults, every
commit flushed to disk as in production, or `--postgres-url`) — registers the
charge points' idTags (so that sessions are Accepted, as in a real network) and drives N
charge points through complete charging sessions (Authorize, StartTransaction,
10 MeterValues, StopTransaction, with the status notifications between), one
outstanding CALL each. Reports complete sessions per second and CALLs per second.

Run::

    .venv/bin/python bench/transactions.py [--charge-points 100] [--duration 10]
        [--engines sqlite,postgresql] [--postgres-url postgresql+asyncpg://…]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from load import register_id_tags, run_load  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(database_url: str, settings: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without its KILOWATT_* settings, and the benchmark's (and
    ``settings``, by setting name: ``--setting NAME=VALUE``)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KILOWATT_")}
    env.update(
        KILOWATT_DATABASE_URL=database_url,
        KILOWATT_BOOT_POLICY="accept-all",
        KILOWATT_LOG_LEVEL="warning",
        KILOWATT_CONFIGURATION_SYNC_ON_BOOT="false",
    )
    for name, value in (settings or {}).items():
        env[f"KILOWATT_{name.upper()}"] = value
    return env


def setting(text: str) -> tuple[str, str]:
    """``--setting NAME=VALUE``: one of kilowatt serve's settings (README)."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=VALUE, e.g. sqlite_commit_delay=0")
    return name, value


def start(
    database_url: str, port: int, directory: Path, settings: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kilowatt", "serve", "--port", str(port)],
        cwd=directory,
        env=server_env(database_url, settings),
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            assert process.stderr is not None
            raise SystemExit(
                f"kilowatt serve failed to start on {database_url}:\n"
                f"{process.stderr.read().decode()}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("kilowatt serve did not listen within 60 s")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def prepare_postgres(url: str) -> None:
    from kilowatt.store.sql.database import open_store
    from kilowatt.store.sql.migrate import upgrade

    async def run() -> None:
        store = open_store(url)
        try:
            await upgrade(store)
        finally:
            await store.close()

    asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--charge-points", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=None, help="use this database, migrated")
    parser.add_argument(
        "--setting",
        type=setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of kilowatt serve (README), e.g. database_concurrent_groups=2; repeatable",
    )
    args = parser.parse_args()
    settings = dict(args.setting)
    rows = []
    postgres = None
    with tempfile.TemporaryDirectory(prefix="kilowatt-bench-") as directory:
        for engine in args.engines.split(","):
            if engine == "sqlite":
                url = f"sqlite:///{directory}/bench.db"
            elif engine == "postgresql":
                url = args.postgres_url
                if url is None:
                    from tests.servers import start_postgres

                    print("starting a throw-away PostgreSQL …", file=sys.stderr, flush=True)
                    postgres = start_postgres(durable=True)
                    url = postgres.url
                prepare_postgres(url)
            else:
                raise SystemExit(f"unknown engine {engine!r}: use sqlite and/or postgresql")
            print(f"[{engine}] registering {args.charge_points} idTags …", file=sys.stderr)
            asyncio.run(register_id_tags(args.charge_points, server_env(url), Path(directory)))
            port = free_port()
            print(f"[{engine}] starting kilowatt serve on port {port} …", file=sys.stderr)
            process = start(url, port, Path(directory), settings)
            try:
                result = asyncio.run(
                    run_load(
                        f"ws://127.0.0.1:{port}/ocpp/",
                        charge_points=args.charge_points,
                        duration=args.duration,
                        warmup=args.warmup,
                    )
                )
            finally:
                stop(process)
            rows.append((engine, result))
        if postgres is not None:
            postgres.stop()
    print("| database | charge points | transactions/s | msgs/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine, result in rows:
        print(
            f"| {engine} | {result.connected}/{result.charge_points} | "
            f"{result.transactions_per_s:,.1f} | {result.msgs_per_s:,.0f} | "
            f"{result.p50_ms:.1f} | {result.p99_ms:.1f} | {result.errors} |"
        )
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
