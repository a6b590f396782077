"""Scale-out: OCPP throughput of ``kilowatt serve`` with 1 and 2 worker processes.

Run it from the repository root (it starts a throw-away PostgreSQL and Redis, like
the tests)::

    .venv/bin/python bench/scaleout.py --charge-points 100 --duration 10 --warmup 2

Configurations, each on a fresh migrated PostgreSQL database (with the load
generator's idTags registered, so that its sessions are Accepted) and an emptied Redis:

* ``single node``: ``kilowatt serve`` without ``--redis-url`` (one process, nothing
  leaves it): what clustering itself costs, compared with the next one;
* ``1 worker + Redis``: ``kilowatt serve --workers 1 --redis-url …``, a cluster of one;
* ``2 workers + Redis``: ``kilowatt serve --workers 2 --redis-url …``, two worker
  processes sharing the port (SO_REUSEPORT), each a cluster node.

Each server is driven by ``bench/load.py --json`` in its own process, exactly as
``bench/compare.py`` does (its helpers are reused): N charge points, each with one
CALL outstanding, running charging sessions. Reported: answered CALLs per second,
p50/p99 latency, errors, and the server's CPU (supervisor and every worker, from
``/proc``) during the measurement window; then the ratio 2 workers / 1 worker.

The hop through Redis for an API call (same call answered on the node holding the
socket vs. through another node) is measured by ``bench/cluster.py``; this script
runs that measurement too (``--hop-calls``, 0 to skip).

Everything runs on one machine: the server's workers, the load generator,
PostgreSQL and Redis share its cores, so on 2 cores a second worker cannot double
anything. The output says where the CPU went during each run (server, load
generator, PostgreSQL, Redis, and other processes on the machine) and how much was
left idle for the second worker. The load average is recorded with every run: on a
shared machine the figures vary a lot. Progress goes to stderr.

``PYTHONPATH=DIR/src`` measures another Kilowatt source tree (e.g. one checked out
with ``git archive COMMIT src``): the servers inherit the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis as sync_redis

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO_ROOT))

from tests.cluster.conftest import (  # noqa: E402
    ClusterDatabase,
    _create_database,
    _drop_database,
    finish,
    spawn,
    wait_ready,
)
from tests.servers import start_postgres, start_redis  # noqa: E402

from cluster import find_pid, machine_busy_seconds, measure_hop, percentile  # noqa: E402
from compare import (  # noqa: E402
    SERVER_ENV,
    CompareError,
    ServerRun,
    ServerSpec,
    free_port,
    log,
    run_load_process,
    script_command,
    start_server,
    stop_server,
    tree_cpu_seconds,
)
from load import LoadError, register_id_tags  # noqa: E402

LISTEN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Config:
    name: str
    workers: int
    redis: bool


CONFIGS = (
    Config("single node (no Redis)", 1, False),
    Config("1 worker + Redis", 1, True),
    Config("2 workers + Redis", 2, True),
)


@dataclass
class Measured:
    config: Config
    run: ServerRun
    load_before: float  # 1-minute load average when the run started
    load_after: float
    connections: list[int]  # peak charge point connections per worker process
    machine_busy: float | None  # cores busy on the whole machine during the load run
    breakdown: dict[str, float]  # cores of each part of it, same window


# -- /proc ------------------------------------------------------------------------------------


def tcp_sockets() -> Iterator[list[str]]:
    """The fields of every row of /proc/net/tcp and tcp6 (local address, state, inode …)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield line.split()


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (one per worker with SO_REUSEPORT)."""
    wanted = f"0100007F:{port:04X}"
    return sum(1 for f in tcp_sockets() if f[1] == wanted and f[3] == "0A")  # LISTEN


def workers_of(server_pid: int) -> list[int]:
    """The worker processes of a ``--workers`` supervisor (not multiprocessing's helpers)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server_pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return sorted(found)


def established_inodes(port: int) -> set[str]:
    """Socket inodes of the established connections whose local port is ``port``."""
    suffix = f":{port:04X}"
    # State 01: ESTABLISHED.
    return {f[9] for f in tcp_sockets() if f[1].endswith(suffix) and f[3] == "01"}


def connections_of(pid: int, inodes: set[str]) -> int:
    """How many of the sockets ``inodes`` process ``pid`` holds open."""
    count = 0
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


async def wait_listening(port: int, workers: int) -> None:
    """Until every worker listens on the port (the first one alone already accepts)."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while listening_sockets(port) < workers:
        if time.monotonic() > deadline:
            raise CompareError(
                f"only {listening_sockets(port)} of {workers} workers listen on port {port} "
                f"after {LISTEN_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(0.1)


async def sample_connections(server_pid: int, port: int, workers: int, peaks: list[int]) -> None:
    """Peak charge point connections held by each worker (the server itself if only one)."""
    while True:
        pids = workers_of(server_pid) if workers > 1 else [server_pid]
        inodes = established_inodes(port)
        counts = [connections_of(pid, inodes) for pid in pids]
        if len(peaks) < len(counts):
            peaks.extend([0] * (len(counts) - len(peaks)))
        for index, count in enumerate(counts):
            peaks[index] = max(peaks[index], count)
        await asyncio.sleep(1.0)


# -- one run ----------------------------------------------------------------------------------


def server_spec(config: Config, database: ClusterDatabase, redis_url: str) -> ServerSpec:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "kilowatt",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(config.workers),
        "--database-url",
        database.url,
    ]
    if config.redis:
        argv += ["--redis-url", redis_url]
    env = {key: value for key, value in os.environ.items() if not key.startswith("KILOWATT_")}
    env.update(SERVER_ENV)
    return ServerSpec(
        name=config.name,
        argv=argv,
        url=f"ws://127.0.0.1:{port}/ocpp/",
        port=port,
        env=env,
        hint="Check the server's stderr above.",
    )


def cpu_snapshot(server_pid: int, services: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of the machine, the server, the services and the load generator."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the load generator, once reaped
    own = resource.getrusage(resource.RUSAGE_SELF)
    snapshot = {
        "wall": time.perf_counter(),
        "machine": machine_busy_seconds()[0],
        "server": tree_cpu_seconds(server_pid) or 0.0,
        "load-gen": children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime,
    }
    for name, pid in services.items():
        snapshot[name] = (tree_cpu_seconds(pid) or 0.0) if pid is not None else 0.0
    return snapshot


def cpu_breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Cores in use between two snapshots; ``other`` is everyone else on the machine."""
    window = max(after["wall"] - before["wall"], 1e-9)
    cores = {key: (after[key] - before[key]) / window for key in before if key != "wall"}
    cores["other"] = cores["machine"] - sum(
        value for key, value in cores.items() if key != "machine"
    )
    return cores


async def measure(
    config: Config,
    postgres_url: str,
    redis_url: str,
    services: dict[str, int | None],
    args: argparse.Namespace,
    log_dir: Path,
) -> Measured:
    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.flushdb()  # no presence keys of an earlier run
    finally:
        client.close()
    database = await _create_database(postgres_url)
    spec = server_spec(config, database, redis_url)
    run = ServerRun(spec)
    peaks: list[int] = []
    load_before = os.getloadavg()[0]
    proc: asyncio.subprocess.Process | None = None
    machine_busy: float | None = None
    breakdown: dict[str, float] = {}
    sampler: asyncio.Task[None] | None = None
    try:
        try:  # sessions Accepted, as in a real network (and as bench/compare.py runs them)
            env = {**spec.env, "KILOWATT_DATABASE_URL": database.url}
            await register_id_tags(args.charge_points, env, REPO_ROOT)
        except LoadError as exc:
            raise CompareError(str(exc)) from exc
        proc, _ = await start_server(spec, log_dir, args.startup_timeout)
        await wait_listening(spec.port, config.workers)
        sampler = asyncio.create_task(
            sample_connections(proc.pid, spec.port, config.workers, peaks)
        )
        before = cpu_snapshot(proc.pid, services)
        run.load = await run_load_process(run, proc.pid, args)
        breakdown = cpu_breakdown(before, cpu_snapshot(proc.pid, services))
        machine_busy = breakdown.pop("machine")
        if proc.returncode is not None:
            run.notes.append(f"server exited during the run (code {proc.returncode})")
    except CompareError as exc:
        run.error = str(exc)
        log(f"[scaleout] error: {exc}")
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        if proc is not None:
            await stop_server(spec.name, proc)
        await _drop_database(postgres_url, database.url)
    return Measured(config, run, load_before, os.getloadavg()[0], peaks, machine_busy, breakdown)


async def hop(postgres_url: str, redis_url: str, calls: int) -> tuple[list[float], list[float]]:
    database = await _create_database(postgres_url)
    a, b = (spawn(name, database, redis_url, node_id=name, log_level="warning") for name in "ab")
    try:
        await asyncio.to_thread(wait_ready, a, b)
        return await measure_hop(a, b, database, calls)
    finally:
        finish(a, b)
        await _drop_database(postgres_url, database.url)


# -- report -----------------------------------------------------------------------------------


def median_rate(results: list[Measured], config: Config) -> float | None:
    rates = [
        float(m.run.load["msgs_per_s"])
        for m in results
        if m.config == config and m.run.load is not None
    ]
    return statistics.median(rates) if rates else None


def markdown(
    results: list[Measured],
    hop_ms: tuple[list[float], list[float]] | None,
    args: argparse.Namespace,
) -> str:
    lines = [
        f"## Scale-out: {args.charge_points} charge points, {args.duration:g} s measured "
        f"after {args.warmup:g} s warm-up, PostgreSQL",
        "",
        "| configuration | msgs/s | p50 ms | p99 ms | errors | server CPU (cores) "
        "| server CPU-s / 1k calls | load-gen CPU | machine busy: server + load-gen + "
        "PostgreSQL + Redis + other | connections per worker | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for m in results:
        load: dict[str, Any] | None = m.run.load
        if load is None:
            lines.append(f"| {m.config.name} | failed: {m.run.error} |" + " |" * 9)
            continue
        cpu = m.run.server_cpu_util
        per_1000 = m.run.server_cpu_per_1000()
        lines.append(
            f"| {m.config.name} | {load['msgs_per_s']:,.0f} | {load['p50_ms']:.2f} "
            f"| {load['p99_ms']:.2f} | {load['errors']} "
            f"| {'n/a' if cpu is None else f'{cpu:.2f}'} "
            f"| {'n/a' if per_1000 is None else f'{per_1000:.3f}'} "
            f"| {load['cpu_util']:.2f} "
            f"| {busy_text(m)} "
            f"| {' / '.join(str(n) for n in m.connections) or 'n/a'} "
            f"| {m.load_before:.1f} → {m.load_after:.1f} |"
        )
    lines.append("")
    by_name = {config.name: median_rate(results, config) for config in CONFIGS}
    one, two = by_name["1 worker + Redis"], by_name["2 workers + Redis"]
    single = by_name["single node (no Redis)"]
    if one and two:
        lines.append(f"**2 workers / 1 worker (both with Redis): {two / one:.2f}×** msgs/s")
    if one and single:
        lines.append(
            f"**1 worker + Redis / single node: {one / single:.2f}×** msgs/s "
            "(what clustering costs on the OCPP path)"
        )
    if args.repeat > 1:
        lines.append(f"(ratios of the medians of {args.repeat} runs each)")
    lines.append("")
    if hop_ms is not None:
        local, remote = hop_ms
        lines += [
            "| API call (Reset), measured as bench/cluster.py does | median ms | p95 ms |",
            "|---|---:|---:|",
            f"| on the node holding the socket | {statistics.median(local):.2f} "
            f"| {percentile(local, 0.95):.2f} |",
            f"| through another node (Redis) | {statistics.median(remote):.2f} "
            f"| {percentile(remote, 0.95):.2f} |",
            "",
            f"Redis hop: +{statistics.median(remote) - statistics.median(local):.2f} ms "
            f"median per API call ({len(local)} calls each way).",
            "",
        ]
    else:
        lines += [
            "The Redis hop of an API call is measured by `bench/cluster.py` "
            "(local vs. cross-node Reset).",
            "",
        ]
    cpus = os.cpu_count() or 1
    load_gen = [m.run.load["cpu_util"] for m in results if m.run.load is not None]
    lines += [
        f"- Machine: {cpus} CPUs, {platform.machine()}, Python {platform.python_version()}. "
        f"Everything runs on it: the load generator (up to {max(load_gen, default=0.0):.2f} "
        "of a core here), the server, PostgreSQL and Redis. " + headroom_note(results, cpus),
        "- msgs/s = OCPP CALLs answered per second, each charge point with one CALL "
        "outstanding; server CPU = supervisor + every worker process (from /proc) during "
        "the measurement window, in cores.",
        "- machine busy = cores in use on the whole machine from the load generator's start "
        "to its end (connect phase and warm-up included), and how they split: server, load "
        "generator, PostgreSQL, Redis, other = anyone else's processes; connections per "
        "worker = peak charge point connections each worker held.",
        "- load avg = 1-minute load average before → after the run (others may be using "
        "the machine).",
    ]
    lines += error_notes(results)
    lines += [
        "",
        "Reproduce with:",
        "",
        "```",
        reproduce_command(args),
        "```",
    ]
    return "\n".join(lines)


def error_notes(results: list[Measured]) -> list[str]:
    """What the errors of each run were (kinds, and the first ones load.py kept)."""
    notes: list[str] = []
    for index, m in enumerate(results, 1):
        load = m.run.load
        if load is None or not load["errors"]:
            continue
        kinds = ", ".join(f"{k} {v}" for k, v in load["error_breakdown"].items() if v)
        notes.append(f"- run {index} ({m.config.name}) errors: {kinds}")
        notes += [f"  - `{error[:200]}`" for error in load["first_errors"][:2]]
    return notes


def busy_text(m: Measured) -> str:
    if m.machine_busy is None:
        return "n/a"
    parts = ("server", "load-gen", "postgres", "redis", "other")
    return f"{m.machine_busy:.2f} = " + " + ".join(
        f"{m.breakdown.get(part, 0.0):.2f}" for part in parts
    )


def headroom_note(results: list[Measured], cpus: int) -> str:
    """How much CPU was left for a 2nd worker, from the 1-worker runs."""
    busy = [
        m.machine_busy
        for m in results
        if m.config.name == "1 worker + Redis" and m.machine_busy is not None
    ]
    if not busy:
        return ""
    used = statistics.median(busy)
    return (
        f"With 1 worker (+ Redis) the machine was {used:.2f} of {cpus} cores busy, so a 2nd "
        f"worker had about {max(0.0, cpus - used):.2f} idle cores to add: the 2-worker "
        "figure shows what this machine allows, not what a second machine would."
    )


def reproduce_command(args: argparse.Namespace) -> str:
    return shlex.join(
        [
            *script_command(__file__),
            "--charge-points",
            str(args.charge_points),
            "--duration",
            f"{args.duration:g}",
            "--warmup",
            f"{args.warmup:g}",
            "--repeat",
            str(args.repeat),
            "--hop-calls",
            str(args.hop_calls),
        ]
    )


# -- main -------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> int:
    if (os.cpu_count() or 1) <= 2:
        log(
            f"[scaleout] note: {os.cpu_count()} CPUs, shared by the server, the load generator, "
            "PostgreSQL and Redis: a 2nd worker has little CPU to add"
        )
    postgres, redis = start_postgres(durable=True), start_redis()
    results: list[Measured] = []
    hop_ms: tuple[list[float], list[float]] | None = None
    services = {
        "postgres": find_pid("postgres", f"-p {urlsplit(postgres.url).port}"),
        "redis": find_pid("redis-server", str(urlsplit(redis.url).port)),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="kilowatt-scaleout-") as tmp:
            for round_ in range(1, args.repeat + 1):
                for config in CONFIGS:  # interleaved: noise spreads over all of them
                    log(f"[scaleout] round {round_}/{args.repeat}: {config.name}")
                    results.append(
                        await measure(config, postgres.url, redis.url, services, args, Path(tmp))
                    )
        if args.hop_calls > 0:
            hop_ms = await hop(postgres.url, redis.url, args.hop_calls)
    finally:
        postgres.stop()
        redis.stop()
    print(markdown(results, hop_ms, args), flush=True)
    return 1 if any(m.run.error for m in results) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--charge-points", type=int, default=100, help="default 100")
    parser.add_argument("--duration", type=float, default=10.0, help="measured s (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="s before measuring (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    parser.add_argument(
        "--hop-calls",
        type=int,
        default=200,
        help="API calls each way for the Redis hop (bench/cluster.py's measurement); 0 skips",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="s to wait for a server to listen"
    )
    args = parser.parse_args(argv)
    if args.charge_points < 1 or args.duration <= 0 or args.warmup < 0 or args.repeat < 1:
        parser.error("need --charge-points >= 1, --duration > 0, --warmup >= 0, --repeat >= 1")
    args.connect_rate = None  # what compare.run_load_process reads
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except (CompareError, RuntimeError) as exc:
        log(f"[scaleout] error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("[scaleout] interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
