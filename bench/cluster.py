"""Cluster mode: what a hop through Redis costs, and how fast a reconnect storm settles.

Run it from the repository root (it starts a throw-away PostgreSQL and Redis, like
the tests, and two ``kilowatt serve`` nodes sharing them)::

    .venv/bin/python bench/cluster.py --calls 300 --charge-points 5000

1. **Hop**: the same API call (``POST …/calls/Reset``) for a charge point connected
   to node B, sent to node B (answered locally, no Redis) and to node A (through
   Redis to B and back), interleaved; medians and p95 of each, end to end over HTTP.
2. **Storm**: N charge points connect (half to each node) and boot; then every
   socket is dropped at once and all reconnect simultaneously, each to the other
   node, until every one has its BootNotification Accepted. Reported: the time until
   the last one is Accepted (against ``--target``), the per charge point time to
   Accepted (p50/p99/max, from the moment of the drop), and every retry and failure.

The storm's charge points are light ``picows`` clients (the load generator's
WebSocket library), not the test suite's ``SimChargePoint``: thousands of them in
one process must not make the client the bottleneck. Each behaves like a charge
point: it connects, sends BootNotification, resends it after the advised interval
while the answer is not Accepted, reconnects after :data:`RETRY_DELAY_S` when the
connection fails or drops, and holds the connection once Accepted.

Each wave also reports the peak open files of each node, the peak number of Redis
clients, the CPU each process took while charge points were booting (and how much
went to other processes on the machine), and the warnings and errors the nodes
logged, counted by kind.

Open files: every socket is a file descriptor, in this process and in the nodes.
The soft ``RLIMIT_NOFILE`` of this process is raised to the hard limit before the
nodes start (they inherit it), and each node's is checked, and raised if need be,
through ``prlimit`` (``kilowatt serve`` raises its own too, but not a version from
before it learnt to). ``--node-fd-limit 1024`` instead lowers the nodes' soft limit
to that once they run (as a hard limit of 1,024 would): it shows what a node does
when it runs out of descriptors.

The load average is printed with the figures: on a shared machine they vary a lot.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import redis.asyncio as aioredis
from picows import WSError, WSFrame, WSListener, WSMsgType, WSTransport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.cluster.conftest import (  # noqa: E402
    PRESENCE_TTL,
    ClusterDatabase,
    Node,
    _create_database,
    api_client,
    finish,
    spawn,
    wait_ready,
)
from tests.cluster.sim import SimChargePoint  # noqa: E402
from tests.servers import asyncpg_dsn, start_postgres, start_redis  # noqa: E402

from compare import tree_cpu_seconds  # noqa: E402
from load import open_websocket, raise_fd_limit  # noqa: E402

CALL, CALLRESULT, CALLERROR = 2, 3, 4
SUBPROTOCOL = "ocpp1.6"
RETRY_DELAY_S = 1.0  # before reconnecting after a failed or dropped connection
BOOT_RETRY_MAX_S = 10.0  # cap on the interval a Pending/Rejected answer advises
CALL_TIMEOUT_S = 30.0  # per connection attempt and per BootNotification
FD_SPARE = 256  # descriptors beyond one per charge point: pools, logs, pipes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# ---------------------------------------------------------------- open files


def raise_fd_limit_or_exit(needed: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; (soft, hard) after."""
    raise_fd_limit(needed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(
            f"{needed} open files needed but the limit is {soft} (hard {hard}): raise the "
            f"hard limit (e.g. `ulimit -Hn {needed}` as root) or use fewer --charge-points"
        )
    return soft, hard


def set_fd_limit(pid: int, needed: int, exact: bool = False) -> str:
    """Raise another process's soft RLIMIT_NOFILE to ``needed`` (at most its hard limit),
    or with ``exact`` set it to ``needed`` whatever it was; soft/hard after.

    A node holds one descriptor per charge point. The nodes inherit this process's
    raised limit, and ``kilowatt serve`` raises its own; this covers a launcher that
    lowered it again. ``exact`` reproduces a node limited to ``needed``
    (``--node-fd-limit``).
    """
    with contextlib.suppress(OSError, ValueError):
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        if exact or (soft != resource.RLIM_INFINITY and soft < needed):
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (target, hard))
    return process_fd_limit(pid)


def process_fd_limit(pid: int) -> str:
    """The soft/hard 'Max open files' of a running process, from /proc."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return "unknown"


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def find_pid(*needles: str) -> int | None:
    """The lowest pid whose command line contains every one of ``needles``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                words = (entry / "cmdline").read_bytes().split(b"\0")
                text = " ".join(word.decode(errors="replace") for word in words)
                if all(needle in text for needle in needles):
                    found.append(int(entry.name))
    return min(found, default=None)


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# -------------------------------------------------------------- the client


class StormPoint(WSListener):
    """One charge point: connect, BootNotification until Accepted, then hold the socket.

    A connection the server closes while it is held counts as a drop; the charge
    point then reconnects and boots again, as a real one would.
    """

    def __init__(self, cp_id: str) -> None:
        super().__init__()
        self.cp_id = cp_id
        self.transport: WSTransport | None = None
        self.answer: asyncio.Future[tuple[str, float]] | None = None
        self.lost: asyncio.Future[str] | None = None  # set while held, resolved on a drop
        self.boot_id = 0
        self.connects = 0  # connection attempts
        self.boots = 0  # BootNotifications sent
        self.failures: list[str] = []  # one entry per thing that went wrong
        self.opened_at = 0.0  # perf_counter when the last successful handshake finished
        self.accepted_at = 0.0  # perf_counter of the last Accepted; 0 while not Accepted

    # picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT or not frame.fin:
            return  # OCPP-J frames are single text frames; pings are answered by picows
        try:
            msg = orjson.loads(frame.get_payload_as_bytes())
        except orjson.JSONDecodeError:
            self._settle("protocol: answer is not JSON", 0.0)
            return
        if msg[0] == CALL:  # nothing is asked of a storm charge point: say so
            reply = [CALLERROR, msg[1], "NotImplemented", "storm charge point", {}]
            transport.send(WSMsgType.TEXT, orjson.dumps(reply))
            return
        if msg[1] != str(self.boot_id):
            return  # a late answer to an earlier, timed-out BootNotification
        if msg[0] == CALLRESULT and isinstance(msg[2], dict):
            status = msg[2].get("status")
            if status == "Accepted":
                self.accepted_at = time.perf_counter()
                self._settle("accepted", 0.0)
                return
            interval = msg[2].get("interval")
            delay = float(interval) if isinstance(interval, int) and interval > 0 else 1.0
            self._settle(f"boot {status}", min(delay, BOOT_RETRY_MAX_S))
        else:
            self._settle(f"boot CALLERROR {msg[2] if len(msg) > 2 else '?'}", RETRY_DELAY_S)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.transport is transport:
            self.transport = None
        self._settle("connection lost", RETRY_DELAY_S)
        if self.lost is not None and not self.lost.done():
            reason = "connection lost"
            handshake = transport.close_handshake
            if handshake is not None and handshake.recv is not None:
                reason = f"closed by the server ({handshake.recv.code}, {handshake.recv.reason!r})"
            self.lost.set_result(reason)

    def _settle(self, outcome: str, retry_in: float) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result((outcome, retry_in))

    # the charge point's behaviour

    def send_boot(self) -> asyncio.Future[tuple[str, float]]:
        assert self.transport is not None
        self.boot_id += 1
        self.boots += 1
        self.answer = asyncio.get_running_loop().create_future()
        payload = {"chargePointVendor": "Sim", "chargePointModel": "Storm"}
        frame = [CALL, str(self.boot_id), "BootNotification", payload]
        self.transport.send(WSMsgType.TEXT, orjson.dumps(frame))
        return self.answer

    async def boot_once(self, base_url: str, deadline: float) -> bool:
        """Connect and boot until Accepted (True) or ``deadline`` (perf_counter) passes."""
        headers = [("Sec-WebSocket-Protocol", SUBPROTOCOL)]
        while time.perf_counter() < deadline:
            self.connects += 1
            timeout = max(0.1, min(CALL_TIMEOUT_S, deadline - time.perf_counter()))
            try:
                transport = await open_websocket(self, base_url + self.cp_id, headers, timeout)
            except (OSError, WSError, TimeoutError) as exc:
                self.failures.append(f"connect {type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            if transport.response is None or self.transport is not transport:
                # picows returns (no exception, no callback) when the server closes the
                # connection during the handshake, e.g. a node out of file descriptors.
                self.failures.append("connect closed during the handshake")
                transport.disconnect(graceful=False)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self.opened_at = time.perf_counter()
            while self.transport is transport:
                timeout = max(0.1, min(CALL_TIMEOUT_S, deadline - time.perf_counter()))
                try:
                    outcome, retry_in = await asyncio.wait_for(self.send_boot(), timeout)
                except TimeoutError:
                    outcome, retry_in = "boot timeout", 0.0
                if outcome == "accepted":
                    return True
                self.failures.append(outcome)
                if time.perf_counter() >= deadline:
                    break
                await asyncio.sleep(retry_in)
        return False

    async def run(self, base_url: str, deadline: float, stop: asyncio.Future[None]) -> None:
        """Boot, then hold until ``stop``; after a drop, reconnect and boot again."""
        while not stop.done() and await self.boot_once(base_url, deadline):
            lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.lost = lost
            waiters: list[asyncio.Future[Any]] = [lost, stop]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if not lost.done():
                return  # held until the end of the wave
            self.accepted_at = 0.0
            self.failures.append(f"dropped after Accepted: {lost.result()}")
            await asyncio.sleep(RETRY_DELAY_S)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a network failure)."""
        self.lost = None
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


@dataclass
class Wave:
    """One wave of charge points reaching Accepted, all started at the same moment."""

    points: list[StormPoint]
    started: float
    elapsed: float = 0.0  # until the last one was Accepted (for good)
    accepted: int = 0  # Accepted and connected when the wave ended
    peak_fds: dict[str, int] = field(default_factory=dict)
    peak_redis_clients: int = 0
    db_connected_all_held: int | None = None  # rows connected=true when all were held
    db_connected_end: int | None = None  # … when the wave ended
    server_log: dict[str, collections.Counter[str]] = field(default_factory=dict)
    log_examples: dict[str, str] = field(default_factory=dict)  # kind → first line
    cpu: dict[str, float] = field(default_factory=dict)  # cores in use, on average

    def boot_round_trips(self) -> list[float]:
        return [p.accepted_at - p.opened_at for p in self.points if p.accepted_at]

    def times(self) -> list[float]:
        return [p.accepted_at - self.started for p in self.points if p.accepted_at]

    def handshakes(self) -> list[float]:
        return [p.opened_at - self.started for p in self.points if p.accepted_at]

    def failure_kinds(self) -> collections.Counter[str]:
        kinds: collections.Counter[str] = collections.Counter()
        for point in self.points:
            kinds.update(failure.split(":")[0] for failure in point.failures)
        return kinds


def held(points: list[StormPoint]) -> int:
    return sum(1 for p in points if p.accepted_at and p.transport is not None)


@dataclass
class Probes:
    """What a wave watches besides its charge points."""

    nodes: list[Node]
    services: dict[str, int | None]  # PostgreSQL's and Redis's process ids
    redis: aioredis.Redis
    database: asyncpg.Connection

    async def redis_clients(self) -> int:
        info = await self.redis.info("clients")
        return int(info["connected_clients"])

    async def connected_rows(self, prefix: str) -> int:
        """Charge points the database says are connected (``connected = true``)."""
        query = "SELECT count(*) FROM charge_points WHERE connected AND id LIKE $1"
        return int(await self.database.fetchval(query, prefix + "%"))


async def wave(
    label: str,
    points: list[StormPoint],
    urls: list[str],
    timeout: float,
    settle: float,
    probes: Probes,
) -> Wave:
    """All ``points`` at once, point i to ``urls[i % len(urls)]``; progress each second.

    The wave ends when every charge point has been Accepted and held its connection for
    ``settle`` seconds (drops are reconnected), or ``settle`` seconds after ``timeout``.
    """
    nodes, services = probes.nodes, probes.services
    log_before = {node.name: len(node.output()) for node in nodes}
    cpu_before = cpu_sample(nodes, services)
    result = Wave(points, time.perf_counter())
    deadline = result.started + timeout
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    tasks = [
        asyncio.create_task(point.run(urls[i % len(urls)], deadline, stop))
        for i, point in enumerate(points)
    ]
    prefix = points[0].cp_id.rstrip("0123456789")
    all_held_since: float | None = None
    cpu_busy = cpu_before
    try:
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            accepted = held(points)
            all_held_since = (all_held_since or now) if accepted == len(points) else None
            for node in nodes:
                fds = open_fds(node.process.pid)
                result.peak_fds[node.name] = max(result.peak_fds.get(node.name, 0), fds)
            with contextlib.suppress(Exception):
                clients = await probes.redis_clients()
                result.peak_redis_clients = max(result.peak_redis_clients, clients)
            rows = await probes.connected_rows(prefix)
            if all_held_since is not None and result.db_connected_all_held is None:
                result.db_connected_all_held = rows
            result.db_connected_end = rows
            log(
                f"[{label}] t={now - result.started:6.1f}s "
                f"accepted+held={accepted}/{len(points)} "
                f"open={sum(1 for p in points if p.transport is not None)} "
                f"retries={sum(len(p.failures) for p in points)} "
                + " ".join(f"fds[{n}]={result.peak_fds[n]}" for n in result.peak_fds)
                + f" redis-clients(peak)={result.peak_redis_clients} db-connected={rows}"
            )
            if all_held_since is not None and now - all_held_since >= settle:
                break
            if accepted < len(points):  # CPU use while charge points are still booting
                cpu_busy = cpu_sample(nodes, services)
            if now > deadline + settle:
                log(f"[{label}] giving up after {timeout:g} s")
                break
    finally:
        stop.set_result(None)
        await asyncio.gather(*tasks, return_exceptions=True)
    result.accepted = held(points)
    last = max((p.accepted_at for p in points if p.accepted_at), default=time.perf_counter())
    result.elapsed = last - result.started
    window = cpu_busy["wall"] - cpu_before["wall"]
    if window > 0:
        result.cpu = {
            key: (cpu_busy[key] - cpu_before[key]) / window for key in cpu_before if key != "wall"
        }
    for node in nodes:
        events: collections.Counter[str] = collections.Counter()
        for line in node.output()[log_before[node.name] :].splitlines():
            if line.strip():
                kind = log_event(line)
                events[kind] += 1
                result.log_examples.setdefault(kind, line)
        result.server_log[node.name] = events
    return result


def cpu_sample(nodes: list[Node], services: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each node, this process, the services (process trees), the
    rest of the machine; and the wall clock."""
    busy, _ = machine_busy_seconds()
    sample = {"wall": time.perf_counter(), "client": own_cpu_seconds()}
    for node in nodes:
        sample[f"node {node.name}"] = tree_cpu_seconds(node.process.pid) or 0.0
    for name, pid in services.items():
        sample[name] = (tree_cpu_seconds(pid) or 0.0) if pid is not None else 0.0
    sample["other"] = busy - sum(value for key, value in sample.items() if key != "wall")
    return sample


LOGFMT_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def log_event(line: str) -> str:
    """``level event (reason)`` of one logfmt line of a node's log, for counting."""
    fields = dict(LOGFMT_FIELD.findall(line))
    if "event" not in fields:
        return line[:160]
    event = fields["event"].strip('"')
    reason = fields.get("reason", "").strip('"').split("(")[0]
    if "exception" in fields:  # a traceback: its last line says what was raised
        reason = fields["exception"].strip('"').split("\\n")[-1][:160]
    text = f"{fields.get('level', '?')} {event}"
    return f"{text} ({reason})" if reason else text


def report_wave(title: str, result: Wave, target: float | None) -> list[str]:
    count = len(result.points)
    times = result.times()
    lines = [f"**{title}**: {result.accepted}/{count} Accepted"]
    if result.accepted == count:
        lines[0] += f", the last after {result.elapsed:.2f} s"
        if target is not None:
            verdict = "met" if result.elapsed <= target else "MISSED"
            lines[0] += f" (target {target:g} s: {verdict})"
    elif target is not None:
        lines[0] += f" (target: all within {target:g} s: MISSED)"
    lines += [
        "",
        "| per charge point, s from the start | p50 | p99 | max |",
        "|---|---:|---:|---:|",
    ]
    if times:
        for name, values in (
            ("WebSocket open (last connection)", result.handshakes()),
            ("BootNotification Accepted", times),
            ("BootNotification round trip (open → Accepted)", result.boot_round_trips()),
        ):
            lines.append(
                f"| {name} | {statistics.median(values):.2f} | {percentile(values, 0.99):.2f} "
                f"| {max(values):.2f} |"
            )
    connects = sum(p.connects for p in result.points)
    boots = sum(p.boots for p in result.points)
    retried = sum(1 for p in result.points if p.failures)
    kinds = result.failure_kinds()
    lines += [
        "",
        f"- connection attempts {connects} for {count} charge points, BootNotifications "
        f"{boots}; {retried} charge points needed a retry",
        "- client-side failures: "
        + (", ".join(f"{kind} ×{n}" for kind, n in kinds.most_common()) or "none"),
        "- peak open files: "
        + ", ".join(f"node {name} {fds}" for name, fds in result.peak_fds.items())
        + f"; peak Redis clients {result.peak_redis_clients}",
        f"- database rows with connected = true: {result.db_connected_all_held} when all "
        f"{count} were first Accepted and connected, {result.db_connected_end} at the end "
        "of the wave",
    ]
    if result.cpu:
        lines.append(
            "- CPU while booting (cores, of "
            f"{os.cpu_count()}): "
            + ", ".join(f"{name} {cores:.2f}" for name, cores in result.cpu.items())
            + " (other = every other process on the machine)"
        )
    first = [f"{p.cp_id}: {f}" for p in result.points for f in p.failures][:3]
    lines += [f"- e.g. {failure}" for failure in first]
    for name, events in result.server_log.items():
        if events:
            lines.append(f"- node {name} logged (warnings and errors, by kind):")
            lines += [f"  - {n} × `{event}`" for event, n in events.most_common(8)]
        else:
            lines.append(f"- node {name} logged no warning or error")
    if result.log_examples:
        lines.append("- first line of each kind:")
        lines += [f"  - `{line[:300]}`" for line in result.log_examples.values()]
    return lines


# ---------------------------------------------------------------- the run


async def measure_hop(
    a: Node, b: Node, database: ClusterDatabase, calls: int
) -> tuple[list[float], list[float]]:
    """Reset for a charge point on B, sent to B and via A, interleaved: ms each way."""
    log(f"[hop] {calls} Reset calls each way (+20 warm-up)")
    local: list[float] = []
    remote: list[float] = []
    cp = SimChargePoint("HOP", timeout=60)
    await cp.connect(b.ws)
    async with api_client(b, database) as on_b, api_client(a, database) as via_a:
        for index in range(calls + 20):
            for client, times in ((on_b, local), (via_a, remote)):
                started = time.perf_counter()
                response = await client.post(
                    "/api/v1/charge-points/HOP/calls/Reset", json={"type": "Soft"}
                )
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.text
                if index >= 20:  # warm-up
                    times.append(elapsed)
    await cp.close()
    return local, remote


async def storm_waves(
    count: int, nodes: list[Node], timeout: float, settle: float, probes: Probes
) -> tuple[Wave, Wave]:
    """First connection (half to each node), then the storm (each to the other node)."""
    a, b = nodes
    log(f"[storm] {count} charge points connect and boot, half to each node")
    ids = [f"STORM-{i:05d}" for i in range(count)]
    first_points = [StormPoint(cp_id) for cp_id in ids]
    first = await wave("first", first_points, [a.ws, b.ws], timeout, settle, probes)
    log(f"[storm] dropping all {count} sockets; each reconnects to the other node")
    for point in first_points:
        point.abort()
    storm_points = [StormPoint(cp_id) for cp_id in ids]  # the same ids, new sockets
    storm = await wave("storm", storm_points, [b.ws, a.ws], timeout, settle, probes)
    for point in storm_points:
        point.abort()
    return first, storm


async def run(
    calls: int, count: int, target: float, storm_timeout: float, node_fd_limit: int | None
) -> None:
    soft, hard = raise_fd_limit_or_exit(count + FD_SPARE)  # the nodes inherit it
    node_fds = count + FD_SPARE if node_fd_limit is None else node_fd_limit
    log(f"[cluster] open files limit of this process: soft {soft}, hard {hard}")
    settle = 1.5 * PRESENCE_TTL  # a wrongly closed connection shows within a renewal
    postgres, redis = start_postgres(durable=True), start_redis()
    try:
        database = await _create_database(postgres.url)
        a, b = (
            spawn(name, database, redis.url, node_id=name, log_level="warning") for name in "ab"
        )
        nodes = [a, b]
        try:
            await asyncio.to_thread(wait_ready, a, b)
            limits = {
                node.name: set_fd_limit(node.process.pid, node_fds, exact=node_fd_limit is not None)
                for node in nodes
            }
            log(f"[cluster] open files limit (soft/hard) of the nodes: {limits}")
            local, remote = await measure_hop(a, b, database, calls)
            services = {
                "postgres": find_pid("postgres", f"-p {urlsplit(postgres.url).port}"),
                "redis": find_pid("redis-server", str(urlsplit(redis.url).port)),
            }
            log(f"[cluster] server processes: {services}")
            probes = Probes(
                nodes,
                services,
                aioredis.Redis.from_url(redis.url),
                await asyncpg.connect(asyncpg_dsn(database.url)),
            )
            try:
                first, storm = await storm_waves(count, [a, b], storm_timeout, settle, probes)
            finally:
                await probes.redis.aclose()
                await probes.database.close()
        finally:
            finish(a, b)
    finally:
        postgres.stop()
        redis.stop()

    load = os.getloadavg()
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {os.cpu_count()} CPUs\n")
    print("| API call (Reset) | median ms | p95 ms |")
    print("|---|---:|---:|")
    print(
        f"| on the node holding the socket | {statistics.median(local):.2f} | "
        f"{percentile(local, 0.95):.2f} |"
    )
    print(
        f"| through another node (Redis) | {statistics.median(remote):.2f} | "
        f"{percentile(remote, 0.95):.2f} |"
    )
    print(f"\n### {count} charge points, 2 nodes\n")
    print(f"open files limit (soft/hard): bench {soft}/{hard}, nodes {limits}\n")
    print("\n".join(report_wave("First connection", first, None)))
    print()
    title = "Reconnect storm (all dropped at once, each to the other node)"
    print("\n".join(report_wave(title, storm, target)))
    print(
        f"\nA wave ends once every charge point has held its Accepted connection for "
        f"{settle:g} s (a connection the server closes meanwhile is retried)."
    )
    option = "" if node_fd_limit is None else f" --node-fd-limit {node_fd_limit}"
    print(
        f"\nreproduce: .venv/bin/python bench/cluster.py --calls {calls} "
        f"--charge-points {count} --target {target:g} --storm-timeout {storm_timeout:g}{option}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=300, help="API calls per path")
    parser.add_argument("--charge-points", type=int, default=300, help="for the storm")
    parser.add_argument(
        "--target", type=float, default=30.0, help="seconds for all to be Accepted (default 30)"
    )
    parser.add_argument(
        "--storm-timeout",
        type=float,
        default=180.0,
        help="give up on a wave after this many seconds (default 180)",
    )
    parser.add_argument(
        "--node-fd-limit",
        type=int,
        default=None,
        help="set the nodes' soft open files limit to this once they run (e.g. 1024) "
        "instead of raising it: shows what a node does when it runs out",
    )
    args = parser.parse_args()
    main_coroutine = run(
        args.calls, args.charge_points, args.target, args.storm_timeout, args.node_fd_limit
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


if __name__ == "__main__":
    main()
