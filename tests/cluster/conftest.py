"""Real cluster nodes: ``python -m kilowatt serve`` processes on their own ports.

Each test module gets a fresh PostgreSQL database (created, migrated, dropped) and
an emptied Redis database; nodes are separate processes, so a test chooses the
node a charge point lands on by the port it connects to. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import asyncpg
import httpx
import pytest
import redis as sync_redis
from sqlalchemy.engine import make_url

from kilowatt.clock import SystemClock
from kilowatt.services.api_tokens import ApiTokenService, Role
from kilowatt.store.sql.database import open_store
from kilowatt.store.sql.migrate import upgrade
from tests.servers import asyncpg_dsn

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
PRESENCE_TTL = 2.0
CALL_TIMEOUT = 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ClusterDatabase:
    url: str
    token: str  # an admin API token


@dataclass
class Node:
    """One ``kilowatt serve`` process (or a ``--workers`` supervisor)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        return int(self.process.returncode)


def node_env(database: ClusterDatabase, redis_url: str, **settings: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "KILOWATT_DATABASE_URL": database.url,
        "KILOWATT_REDIS_URL": redis_url,
        "KILOWATT_PRESENCE_TTL": str(PRESENCE_TTL),
        "KILOWATT_BOOT_POLICY": "accept-all",
        "KILOWATT_PING_INTERVAL": "0",
        "KILOWATT_CALL_TIMEOUT": str(CALL_TIMEOUT),
        "KILOWATT_SHUTDOWN_TIMEOUT": "2",
        "KILOWATT_LOG_LEVEL": "info",
        "KILOWATT_CONFIGURATION_SYNC_ON_BOOT": "false",
        "KILOWATT_MESSAGE_LOG_ENABLED": "false",
    }
    env.update({f"KILOWATT_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def spawn(
    name: str, database: ClusterDatabase, redis_url: str, *args: str, **settings: Any
) -> Node:
    """Start a node without waiting for it (see :func:`wait_ready`)."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the fixture that stops the node
    process = subprocess.Popen(
        [sys.executable, "-m", "kilowatt", "serve", "--port", str(port), *args],
        env=node_env(database, redis_url, **settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Node(name, port, process, log)


def wait_ready(*nodes: Node) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    for node in nodes:
        while True:
            if node.process.poll() is not None:
                pytest.fail(f"node {node.name} exited:\n{node.output()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{node.http}/ready", timeout=1.0, trust_env=False).is_success:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"node {node.name} not ready in {START_TIMEOUT} s:\n{node.output()}")
            time.sleep(0.05)


def finish(*nodes: Node) -> None:
    """Stop the nodes (all at once, then each bounded)."""
    for node in nodes:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        node.stop()
        node.log.close()


# ------------------------------------------------------------------ fixtures


async def _create_database(postgres_url: str) -> ClusterDatabase:
    name = f"kilowatt_cluster_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    store = open_store(url)
    try:
        await upgrade(store)
        _, token = await ApiTokenService(store, SystemClock()).create("cluster", Role.ADMIN)
    finally:
        await store.close()
    return ClusterDatabase(url, token)


async def _drop_database(postgres_url: str, url: str) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def cluster_database(postgres_url: str, redis_url: str) -> Iterator[ClusterDatabase]:
    """A fresh, migrated PostgreSQL database with an admin token; an empty Redis."""
    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    database = asyncio.run(_create_database(postgres_url))
    try:
        yield database
    finally:
        asyncio.run(_drop_database(postgres_url, database.url))


def api_client(node: Node, database: ClusterDatabase) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=node.http,
        headers={"Authorization": f"Bearer {database.token}"},
        timeout=CALL_TIMEOUT + 10,
        trust_env=False,  # loopback only
    )
