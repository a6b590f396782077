"""Capacity: how many connected charge points one Kilowatt process serves at a given rate.

The target (docs/performance.md): 10,000 charge points connected to one process on a
2-core machine, 2,000 CALLs per second offered in total (the load generator's session
mix, every write persisted in SQLite), all of them connected, with p99 < 50 ms and at
most 30 KiB of server memory per connected charge point. Run it from the repository
root::

    .venv/bin/python bench/capacity.py [--charge-points 1000,5000,10000] [--rate 2000]
        [--duration 30] [--warmup W] [--connect-rate 1000]
        [--max [--max-step 5000] [--max-resolution 1000]]
        [--json-out FILE]

For each N, with a fresh server on a fresh SQLite file (in a temporary directory):

1. register the idTags the simulated charge points use (``kilowatt id-tag import``, so
   that Authorize and StartTransaction are Accepted, as in a real network);
2. start ``python -m kilowatt serve`` on a free loopback port (``KILOWATT_LOG_LEVEL=warning
   KILOWATT_BOOT_POLICY=accept-all KILOWATT_CONFIGURATION_SYNC_ON_BOOT=false``: the
   simulated charge points cannot answer GetConfiguration), raise its soft
   ``RLIMIT_NOFILE`` to the hard limit, let it settle and read its resident memory
   (``VmRSS`` of the process and any children, from ``/proc``): the idle figure;
3. connect N charge points at ``--connect-rate`` per second (``bench/load.py``, in this
   process), wait until each has its BootNotification Accepted, let everything settle
   for ``--settle`` seconds and read the server's memory again: (connected - idle) / N
   is the memory per connection;
4. run the load generator's paced mode, ``--rate`` CALLs per second in total spread
   evenly over the charge points (each sends one CALL every N / rate seconds, from a
   random phase), ``--warmup`` seconds (default: one such interval, at least 5 s), then
   ``--duration`` measured seconds; the server's CPU time over the window comes from
   ``/proc`` too;
5. stop the server and judge: PASS when every charge point is connected at the end of
   the window (none failed to connect), p99 < ``--p99-limit-ms`` and the memory per
   connection <= ``--kib-limit``.

``--max`` then searches the largest N that passes: up in steps of ``--max-step`` from
the largest N that passed (never beyond what the open-files limits and the ephemeral
port range allow) until one fails, then halving the gap between the largest pass and
the smallest failure down to ``--max-resolution`` charge points.

A Markdown table goes to stdout with the reproducing command; progress (connected
charge points, answered CALLs per second, server memory) to stderr. The load average is
printed with the figures: the machine may be shared, and other work skews them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from compare import (  # noqa: E402
    _CLK_TCK,
    REPO_ROOT,
    SERVER_ENV,
    CompareError,
    ServerSpec,
    _proc_stat,
    free_port,
    script_command,
    start_server,
    stop_server,
    tree_cpu_seconds,
    write_json,
)
from load import LoadError, register_id_tags, run_load  # noqa: E402

DEFAULT_CHARGE_POINTS = (1000, 5000, 10000)
DEFAULT_RATE = 2000.0
DEFAULT_DURATION_S = 30.0
DEFAULT_CONNECT_RATE = 1000.0
DEFAULT_SETTLE_S = 3.0
MIN_WARMUP_S = 5.0
P99_LIMIT_MS = 50.0
KIB_LIMIT = 30.0
MAX_STEP = 5000
MAX_RESOLUTION = 1000
FD_SPARE = 256  # descriptors beyond one per connection: database, logs, pipes, listeners
ID_PREFIX = "CAP"
SERVE_ARGV = (sys.executable, "-m", "kilowatt", "serve")
SAMPLE_EVERY_S = 5.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the server process, through /proc ----------------------------------------------------------


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and its live descendants (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_kib(pid: int) -> int:
    """Resident memory of one process in KiB (``VmRSS``), 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(root_pid: int) -> int:
    """Resident memory of a process and its children, in KiB."""
    return sum(rss_kib(pid) for pid in process_tree(root_pid))


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (``/proc/stat``; idle and iowait
    left out)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of the server's GIL-holding stacks (collapsed) until SIGINT."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [py_spy, "record", "-p", str(pid), "-f", "raw", "-o", str(output)]
    argv += ["--rate", "200", "--gil", "--nonblocking"]
    try:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        log(f"[capacity] warning: cannot run py-spy ({exc}); no profile")
        return None


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def raise_nofile(pid: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE of a running process to its hard limit; (soft, hard)."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(OSError, ValueError):
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    limits: tuple[int, int] = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    return limits


def max_charge_points() -> tuple[int, str]:
    """The most charge points this machine allows, and what limits it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    bounds = [(limit - FD_SPARE, f"open files (hard RLIMIT_NOFILE {limit})")]
    with contextlib.suppress(OSError, ValueError):
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        bounds.append((int(high) - int(low) + 1, f"ephemeral ports {low}-{high} (one server port)"))
    return min(bounds)


# -- one step ----------------------------------------------------------------------------------


@dataclass
class Step:
    """What one N measured (see the module docstring)."""

    charge_points: int
    offered_rate: float
    warmup_s: float
    connected: int = 0  # connections open at the end of the window
    failed_connections: int = 0
    msgs_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    late_sends: int = 0
    skipped_slots: int = 0
    rss_idle_kib: int = 0
    rss_connected_kib: int = 0
    rss_end_kib: int = 0
    rss_peak_kib: int = 0
    kib_per_connection: float = 0.0  # (connected - idle) / charge points connected
    kib_per_connection_end: float = 0.0  # the same at the end of the window
    server_cpu_util: float | None = None  # share of one core during the window
    # Everything else on the machine during the window (other people's work), in cores:
    # all CPUs' busy time less the server's and this process's.
    other_cpu_util: float | None = None
    server_fd_limit: tuple[int, int] = (0, 0)
    server_open_fds: int = 0  # when connected
    server_warnings: int = 0  # lines the server logged (level warning and above)
    load_cpu_util: float = 0.0
    loadavg_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loadavg_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    load: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def judge(step: Step, p99_limit_ms: float, kib_limit: float) -> list[str]:
    """The criteria a step failed (empty: it passed)."""
    failures: list[str] = []
    if step.connected < step.charge_points or step.failed_connections:
        failures.append(
            f"{step.connected}/{step.charge_points} connected, "
            f"{step.failed_connections} failed connections"
        )
    if step.p99_ms >= p99_limit_ms:
        failures.append(f"p99 {step.p99_ms:.1f} ms >= {p99_limit_ms:g} ms")
    if step.kib_per_connection > kib_limit:
        failures.append(f"{step.kib_per_connection:.1f} KiB/connection > {kib_limit:g} KiB")
    return failures


def server_env(database_url: str, extra: list[str] | None = None) -> dict[str, str]:
    """The server's environment: no inherited KILOWATT_*, the benchmark's settings, then
    ``extra`` (``KEY=VALUE`` items, e.g. to try a setting)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KILOWATT_")}
    env.update(SERVER_ENV)
    env["KILOWATT_DATABASE_URL"] = database_url
    env["KILOWATT_CONFIGURATION_SYNC_ON_BOOT"] = "false"
    for item in extra or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


class _ServerWatch:
    """Samples the server at the load generator's phases and every few seconds."""

    def __init__(self, pid: int, step: Step, profile: Path | None = None) -> None:
        self.pid = pid
        self.step = step
        self.profile = profile  # py-spy output of the window (collapsed stacks), if wanted
        self.profiler: subprocess.Popen[bytes] | None = None
        self.cpu_start: float | None = None
        self.t_start = 0.0
        self.busy_start = 0.0
        self.own_start = 0.0

    def sample(self) -> int:
        rss = tree_rss_kib(self.pid)
        self.step.rss_peak_kib = max(self.step.rss_peak_kib, rss)
        return rss

    def on_phase(self, phase: str) -> None:
        step = self.step
        if phase == "connected":
            step.rss_connected_kib = self.sample()
            step.server_open_fds = open_fds(self.pid)
            log(
                f"[capacity] N={step.charge_points}: server rss "
                f"{step.rss_connected_kib / 1024:.1f} MiB connected "
                f"(idle {step.rss_idle_kib / 1024:.1f} MiB), {step.server_open_fds} open files"
            )
        elif phase == "measure-start":
            if self.profile is not None:
                self.profiler = start_profiler(self.pid, self.profile)
            self.cpu_start, self.t_start = tree_cpu_seconds(self.pid), time.perf_counter()
            self.busy_start, self.own_start = machine_busy_seconds(), own_cpu_seconds()
        elif phase == "measure-end":
            if self.profiler is not None:
                self.profiler.send_signal(signal.SIGINT)  # py-spy writes what it has
            step.rss_end_kib = self.sample()
            cpu_end = tree_cpu_seconds(self.pid)
            if self.cpu_start is not None and cpu_end is not None:
                window = time.perf_counter() - self.t_start
                server = cpu_end - self.cpu_start
                step.server_cpu_util = round(server / window, 3)
                busy = machine_busy_seconds() - self.busy_start
                own = own_cpu_seconds() - self.own_start
                step.other_cpu_util = round(max(0.0, busy - server - own) / window, 2)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            log(
                f"[capacity] N={self.step.charge_points}: server rss "
                f"{self.sample() / 1024:.1f} MiB, {open_fds(self.pid)} open files"
            )


async def run_step(n: int, args: argparse.Namespace, directory: Path) -> Step:
    warmup = args.warmup if args.warmup is not None else max(MIN_WARMUP_S, n / args.rate)
    step = Step(charge_points=n, offered_rate=args.rate, warmup_s=warmup)
    step.loadavg_before = os.getloadavg()
    database = directory / f"capacity-{n}.db"
    env = server_env(f"sqlite:///{database}", args.server_env)
    port = free_port()
    spec = ServerSpec(
        name=f"kilowatt-{n}",
        argv=[*SERVE_ARGV, "--host", "127.0.0.1", "--port", str(port)],
        url=f"ws://127.0.0.1:{port}/ocpp/",
        port=port,
        env=env,
        hint="Make sure Kilowatt is installed in this environment (`pip install -e .`).",
    )
    proc: asyncio.subprocess.Process | None = None
    sampler: asyncio.Task[None] | None = None
    log(f"[capacity] N={n}: fresh database {database}, {n} idTags registered")
    try:
        await register_id_tags(n, env, REPO_ROOT)
        proc, stderr_path = await start_server(spec, directory, args.startup_timeout)
        step.server_fd_limit = raise_nofile(proc.pid)
        if step.server_fd_limit[0] < n + FD_SPARE:
            log(
                f"[capacity] warning: the server may open only {step.server_fd_limit[0]} "
                f"files, fewer than {n} connections need"
            )
        await asyncio.sleep(args.settle)
        if proc.returncode is not None:  # e.g. lost the port to another process
            raise CompareError(f"the server exited (code {proc.returncode}) after starting")
        profile = None if args.py_spy is None else args.py_spy / f"server-{n}.txt"
        watch = _ServerWatch(proc.pid, step, profile)
        step.rss_idle_kib = watch.sample()
        sampler = asyncio.get_running_loop().create_task(watch.run())
        result = await run_load(
            spec.url,
            n,
            args.duration,
            warmup,
            connect_rate=args.connect_rate,
            id_prefix=ID_PREFIX,
            rate=args.rate,
            settle=args.settle,
            on_phase=watch.on_phase,
            lockstep=args.lockstep,
        )
        if watch.profiler is not None:
            await asyncio.to_thread(watch.profiler.wait, 30)
            log(f"[capacity] N={n}: server profile in {profile}")
        if proc.returncode is not None:
            raise CompareError(f"the server exited (code {proc.returncode}) during the run")
        step.load = result.to_dict()
        step.connected = result.connected
        step.failed_connections = result.failed_connections
        step.msgs_per_s = result.msgs_per_s
        step.p50_ms, step.p99_ms, step.max_ms = result.p50_ms, result.p99_ms, result.max_ms
        step.errors = result.errors
        step.late_sends, step.skipped_slots = result.late_sends, result.skipped_slots
        step.load_cpu_util = result.cpu_util
        # Per connection: of the ones connected at the end of the connect phase (= at the
        # end of the window, unless connections dropped: then the step fails anyway).
        per = max(result.connected, 1)
        step.kib_per_connection = round((step.rss_connected_kib - step.rss_idle_kib) / per, 2)
        step.kib_per_connection_end = round((step.rss_end_kib - step.rss_idle_kib) / per, 2)
        step.server_warnings = _count_lines(stderr_path)
        step.failures = judge(step, args.p99_limit_ms, args.kib_limit)
    except (CompareError, LoadError) as exc:
        step.error = str(exc)
        log(f"[capacity] N={n}: error: {exc}")
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if proc is not None:
            await stop_server(spec.name, proc)
        step.loadavg_after = os.getloadavg()
    verdict = "PASS" if step.passed else "FAIL: " + "; ".join(step.failures or [str(step.error)])
    log(
        f"[capacity] N={n}: {step.connected}/{n} connected, {step.msgs_per_s:,.0f} msgs/s, "
        f"p99 {step.p99_ms:.1f} ms, {step.kib_per_connection:.1f} KiB/connection -> {verdict}"
    )
    return step


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


# -- report --------------------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def markdown_report(
    steps: list[Step],
    args: argparse.Namespace,
    command: str,
    search_note: str | None,
    code: str = "unknown",
) -> str:
    header = (
        "| charge points | connected at end | failed connections | offered msgs/s "
        "| achieved msgs/s | p50 ms | p99 ms | max ms | errors "
        "| server RSS MiB idle / connected / end | KiB per connection (end of window) "
        "| server CPU | other processes' CPU | load avg 1 min | result |"
    )
    lines = [
        f"## Kilowatt capacity: {args.rate:,.0f} msgs/s offered, {args.duration:g} s measured",
        "",
        header,
        "|" + "---:|" * 14 + "---|",
    ]
    for s in steps:
        if s.error is not None:
            lines.append(f"| {s.charge_points:,} |" + " |" * 13 + f" error: {s.error} |")
            continue
        cpu = "n/a" if s.server_cpu_util is None else f"{s.server_cpu_util:.0%}"
        other = "n/a" if s.other_cpu_util is None else f"{s.other_cpu_util:.2f} cores"
        verdict = "**PASS**" if s.passed else "**FAIL**: " + "; ".join(s.failures)
        lines.append(
            f"| {s.charge_points:,} | {s.connected:,} | {s.failed_connections} "
            f"| {s.offered_rate:,.0f} | {s.msgs_per_s:,.0f} | {s.p50_ms:.1f} "
            f"| {s.p99_ms:.1f} | {s.max_ms:.1f} | {s.errors} "
            f"| {_mib(s.rss_idle_kib)} / {_mib(s.rss_connected_kib)} / {_mib(s.rss_end_kib)} "
            f"| {s.kib_per_connection:.1f} ({s.kib_per_connection_end:.1f}) | {cpu} | {other} "
            f"| {s.loadavg_before[0]:.2f} → {s.loadavg_after[0]:.2f} | {verdict} |"
        )
    passed = [s.charge_points for s in steps if s.passed]
    lines += [
        "",
        f"**Largest N that passed: {max(passed):,}**" if passed else "**No N passed.**",
    ]
    if search_note:
        lines.append(f"({search_note})")
    lines += [
        "",
        f"- PASS = every charge point connected at the end of the window (none failed), "
        f"p99 < {args.p99_limit_ms:g} ms, server memory per connection <= "
        f"{args.kib_limit:g} KiB: (RSS connected - RSS idle) / N, read from /proc when all "
        f"N are connected, booted and idle for {args.settle:g} s. In brackets: the same at "
        "the end of the window (sessions running, message log buffered).",
        f"- Load: bench/load.py paced mode, each charge point one CALL every N / "
        f"{args.rate:g} s from a random phase, sessions of StatusNotification, Authorize, "
        "StartTransaction, 10 MeterValues (+2 Heartbeats), StopTransaction, "
        + (
            "every first session from the top at once (--lockstep)"
            if args.lockstep
            else "each charge point's first session from a random step"
        )
        + "; connected at "
        f"{args.connect_rate:g}/s; warm-up {_warmups(steps)} s before the window.",
        "- Server: `python -m kilowatt serve`, fresh SQLite file per N, message log on, "
        "boot policy accept-all, configuration sync on boot off, log level warning; "
        "idTags registered beforehand" + _extra_env(args.server_env) + f". Code: {code}.",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        "the load generator runs in this process (uvloop), the server in its own. "
        "The machine may be shared: 'other processes' CPU' is the busy time of all CPUs "
        "during the window less the server's and the load generator's, in cores; the load "
        "average before → after each step is shown too.",
    ]
    for s in steps:
        if s.error is None and s.server_fd_limit[0] < s.charge_points + FD_SPARE:
            lines.append(
                f"- N={s.charge_points}: the server's open-files limit was only "
                f"{s.server_fd_limit[0]}"
            )
        if s.load and s.load.get("first_errors"):
            lines.append(f"- N={s.charge_points}: first errors: {s.load['first_errors'][:3]}")
        if s.server_warnings:
            lines.append(f"- N={s.charge_points}: the server logged {s.server_warnings} lines")
    lines += ["", "Reproduce with:", "", "```", command, "```"]
    return "\n".join(lines)


def server_code() -> str:
    """Which Kilowatt the server runs: its source directory, and the commit if in Git.

    The checkout may be shared and edited while the benchmark runs: say so."""
    env = server_env("sqlite://")
    try:
        found = subprocess.run(
            [sys.executable, "-c", "import kilowatt; print(kilowatt.__file__)"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    source = Path(found).parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return str(source)
    return f"{source} at {commit}" + (" with uncommitted changes" if dirty else "")


def _extra_env(items: list[str]) -> str:
    return "; also " + ", ".join(f"`{item}`" for item in items) if items else ""


def _warmups(steps: list[Step]) -> str:
    return "/".join(f"{s.warmup_s:g}" for s in steps)


def reproduce_command(args: argparse.Namespace) -> str:
    argv = [
        *script_command(__file__),
        "--charge-points",
        ",".join(str(n) for n in args.charge_points),
        "--rate",
        f"{args.rate:g}",
        "--duration",
        f"{args.duration:g}",
        "--connect-rate",
        f"{args.connect_rate:g}",
        "--settle",
        f"{args.settle:g}",
        "--p99-limit-ms",
        f"{args.p99_limit_ms:g}",
        "--kib-limit",
        f"{args.kib_limit:g}",
    ]
    if args.warmup is not None:
        argv += ["--warmup", f"{args.warmup:g}"]
    if args.max:
        argv += ["--max", "--max-step", str(args.max_step)]
        argv += ["--max-resolution", str(args.max_resolution)]
    if args.lockstep:
        argv.append("--lockstep")
    for item in args.server_env:
        argv += ["--server-env", item]
    if args.py_spy is not None:
        argv += ["--py-spy", str(args.py_spy)]
    return shlex.join(argv)


# -- main ----------------------------------------------------------------------------------------


def charge_point_list(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give one or more numbers >= 1, e.g. 1000,5000,10000")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="How many connected charge points one Kilowatt process serves."
    )
    parser.add_argument(
        "--charge-points",
        type=charge_point_list,
        default=list(DEFAULT_CHARGE_POINTS),
        help="comma-separated N to measure (default 1000,5000,10000)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"CALLs per second offered in total (default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION_S,
        help=f"measured seconds per N (default {DEFAULT_DURATION_S:g})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help=f"seconds of load before measuring (default: N / rate, at least {MIN_WARMUP_S:g})",
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=DEFAULT_CONNECT_RATE,
        help=f"new connections per second (default {DEFAULT_CONNECT_RATE:g})",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_S,
        help="idle seconds before each memory reading (default 3)",
    )
    parser.add_argument(
        "--max",
        action="store_true",
        help="after the list, search the largest N that passes (see --max-step, --max-resolution)",
    )
    parser.add_argument(
        "--max-step",
        type=int,
        default=MAX_STEP,
        help=f"--max goes up in steps of this many charge points (default {MAX_STEP})",
    )
    parser.add_argument(
        "--max-resolution",
        type=int,
        default=MAX_RESOLUTION,
        help="--max then narrows the gap between the largest pass and the next failure "
        f"down to this many charge points (default {MAX_RESOLUTION})",
    )
    parser.add_argument(
        "--p99-limit-ms", type=float, default=P99_LIMIT_MS, help=f"default {P99_LIMIT_MS:g}"
    )
    parser.add_argument(
        "--kib-limit",
        type=float,
        default=KIB_LIMIT,
        help=f"server KiB per connection allowed (default {KIB_LIMIT:g})",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the server to listen (default 60)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the server, e.g. KILOWATT_MESSAGE_LOG_ENABLED=false "
        "(repeatable)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile the server during each window with py-spy (GIL-holding samples, "
        "collapsed stacks in DIR/server-N.txt); it costs the server some CPU",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--no-uvloop", action="store_true", help="load generator on the asyncio default loop"
    )
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="every charge point begins its first session at the top at once (Authorize, "
        "StartTransaction...): a worst case; default: each at a random step (bench/load.py)",
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connect_rate <= 0 or args.settle < 0:
        parser.error("need --rate, --duration, --connect-rate > 0 and --settle >= 0")
    if args.warmup is not None and args.warmup < 0:
        parser.error("need --warmup >= 0")
    if args.max_step < 1 or args.max_resolution < 1:
        parser.error("need --max-step >= 1 and --max-resolution >= 1")
    for item in args.server_env:
        if "=" not in item or not item.partition("=")[0]:
            parser.error(f"--server-env takes KEY=VALUE, got {item!r}")
    return args


def next_probe(
    passed: list[int], failed: list[int], step: int, resolution: int, ceiling: int
) -> int | None:
    """The next N the --max search measures, or None when it is done.

    Up in ``step``s from the largest N that passed while nothing above it failed (never
    beyond ``ceiling``), then halving the gap between the largest pass and the smallest
    failure above it until it is at most ``resolution``. Nothing passed: halving from 0.
    """
    low = max(passed, default=0)
    above = [n for n in failed if n > low]
    if not above:
        probe = low + step
        return probe if probe <= ceiling else None
    high = min(above)
    if high - low <= resolution:
        return None
    return (low + high) // 2


async def measure(args: argparse.Namespace, directory: Path) -> tuple[list[Step], str | None]:
    """Every N of the list, then the --max search; (steps, how the search ended)."""
    steps: list[Step] = []
    for n in args.charge_points:
        steps.append(await run_step(n, args, directory))
    if not args.max:
        return steps, None
    ceiling, reason = max_charge_points()
    while True:
        passed = [s.charge_points for s in steps if s.passed]
        failed = [s.charge_points for s in steps if not s.passed]
        n = next_probe(passed, failed, args.max_step, args.max_resolution, ceiling)
        if n is None:
            break
        steps.append(await run_step(n, args, directory))
    best = max(passed, default=0)
    above = [n for n in failed if n > best]
    if not above:
        return steps, f"search stopped at the {reason} ({ceiling:,} charge points)"
    return steps, (
        f"search: {best:,} passed, {min(above):,} failed "
        f"(resolution {args.max_resolution:,} charge points)"
    )


async def amain(args: argparse.Namespace) -> int:
    if (os.cpu_count() or 1) < 2:
        log("[capacity] warning: fewer than 2 CPUs; the load generator competes with the server")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:  # the load generator's own sockets; the server inherits it too
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ceiling, reason = max_charge_points()
    too_many = [n for n in args.charge_points if n > ceiling]
    if too_many:
        log(f"[capacity] error: {too_many} exceed what the {reason} allows ({ceiling:,})")
        return 2
    log(f"[capacity] load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    command = reproduce_command(args)
    code = server_code()
    log(f"[capacity] server code: {code}")
    with tempfile.TemporaryDirectory(prefix="kilowatt-capacity-") as tmp:
        steps, search_note = await measure(args, Path(tmp))
    report = markdown_report(steps, args, command, search_note, code)
    print(report, flush=True)
    if args.json_out is not None:
        payload = {
            "command": command,
            "config": {key: value for key, value in vars(args).items() if key not in ("json_out",)},
            "server_code": code,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "steps": [step.to_dict() for step in steps],
            "largest_passing": max((s.charge_points for s in steps if s.passed), default=None),
            "search": search_note,
            "markdown": report,
        }
        if not write_json(args.json_out, payload, "capacity"):
            return 1
    return 0 if all(step.error is None for step in steps) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        log("[capacity] interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
