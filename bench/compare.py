"""Side-by-side benchmark: Kilowatt vs. a baseline Central System built on the ``ocpp`` package.

Run it from the repository root::

    .venv/bin/python bench/compare.py --charge-points 100 --duration 10 --warmup 2
    .venv/bin/python bench/compare.py --only baseline          # just the baseline
    .venv/bin/python bench/compare.py --json-out bench/results/run.json

For each server, one after the other (never both at once, so they do not compete for CPU):

0. Kilowatt only, with its own ``kilowatt serve``: register the load generator's idTags
   in the database it will use (``kilowatt id-tag import``; those already there are
   kept), so that Authorize and StartTransaction are Accepted as in a real network;
1. start it as a subprocess on a free loopback port — Kilowatt with
   ``python -m kilowatt serve --host 127.0.0.1 --port {port}`` (``--kilowatt-cmd`` overrides
   it) and ``KILOWATT_LOG_LEVEL=warning KILOWATT_BOOT_POLICY=accept-all``; the baseline is
   ``bench/baseline_server.py`` (with ``--uvloop`` unless ``--no-uvloop-baseline``);
2. wait until it accepts TCP connections (at most ``--startup-timeout`` seconds);
3. run ``bench/load.py --json`` against it in its own process (so the load generator gets its
   own core and its CPU use is measured apart from the server's);
4. stop it (SIGINT, then SIGTERM and SIGKILL if it does not exit within 10 s).

The server's CPU time during the measurement window is read from ``/proc`` (Linux; the
server and all its child processes). The results are printed as a Markdown table on stdout
together with the Kilowatt/baseline throughput ratio and the command that reproduces the
run. Progress goes to stderr.

``--rounds N`` runs the two servers alternately N times and reports the median of the
rounds' ratios: the machine's speed drifts over minutes (on a shared machine the
baseline's rate moved between 2,850 and 4,050 msgs/s in one day), and each round
compares two runs taken a few seconds apart. The database carries over from round to
round (the same ``KILOWATT_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LOAD_SCRIPT = BENCH_DIR / "load.py"
BASELINE_SCRIPT = BENCH_DIR / "baseline_server.py"

sys.path.insert(0, str(BENCH_DIR))
from load import LoadError, register_id_tags  # noqa: E402

DEFAULT_KILOWATT_CMD = "{python} -m kilowatt serve --host 127.0.0.1 --port {port}"
DEFAULT_KILOWATT_URL = "ws://127.0.0.1:{port}/ocpp/"
SERVER_ENV = {"KILOWATT_LOG_LEVEL": "warning", "KILOWATT_BOOT_POLICY": "accept-all"}
STOP_GRACE_S = 10.0
KILL_GRACE_S = 5.0
STDERR_TAIL_CHARS = 4000


class CompareError(Exception):
    """The comparison could not be carried out; the message says what to do about it."""


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    url: str
    port: int
    env: dict[str, str]
    hint: str  # what to do when it does not start
    register_id_tags: bool = False  # `kilowatt id-tag import` the load's idTags first


@dataclass
class ServerRun:
    spec: ServerSpec
    load: dict[str, Any] | None = None
    server_cpu_s: float | None = None
    server_cpu_util: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    round: int = 1  # --rounds: which of the alternating rounds

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.spec.name,
            "round": self.round,
            "command": shlex.join(self.spec.argv),
            "url": self.spec.url,
            "load": self.load,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_util": self.server_cpu_util,
            "server_cpu_s_per_1000_calls": self.server_cpu_per_1000(),
            "error": self.error,
        }

    def server_cpu_per_1000(self) -> float | None:
        if self.server_cpu_s is None or not self.load or not self.load.get("calls"):
            return None
        return round(self.server_cpu_s / float(self.load["calls"]) * 1000, 4)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def script_command(script: str) -> list[str]:
    """``python bench/SCRIPT.py`` as one types it in the repository root."""
    inside_repo = sys.executable.startswith(str(REPO_ROOT) + os.sep)
    python = os.path.relpath(sys.executable) if inside_repo else sys.executable
    return [python, os.path.relpath(script)]


def write_json(path: Path, payload: dict[str, Any], who: str) -> bool:
    """Write ``payload`` to ``path`` (--json-out); False, said on stderr, if it fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
    except OSError as exc:
        log(f"[{who}] error: cannot write {path}: {exc}; pick another --json-out")
        return False
    log(f"[{who}] wrote {path}")
    return True


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- CPU accounting through /proc ----------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of one process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


def tree_cpu_seconds(root_pid: int) -> float | None:
    """CPU seconds used so far by a process and all its live descendants (Linux only)."""
    if not Path("/proc/self/stat").exists():
        return None
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    if root_pid not in stats:
        return None
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


# -- server lifecycle ------------------------------------------------------------------------------


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    text = text[-STDERR_TAIL_CHARS:].strip()
    return text or "(empty)"


async def start_server(
    spec: ServerSpec, log_dir: Path, startup_timeout: float
) -> tuple[asyncio.subprocess.Process, Path]:
    """Start the server and wait until its port accepts TCP connections."""
    stdout_path = log_dir / f"{spec.name}.stdout.log"
    stderr_path = log_dir / f"{spec.name}.stderr.log"
    log(f"[compare] starting {spec.name}: {shlex.join(spec.argv)}")
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=spec.env,
                cwd=REPO_ROOT,
            )
        except OSError as exc:
            raise CompareError(
                f"cannot start {spec.name} with `{shlex.join(spec.argv)}`: {exc}. {spec.hint}"
            ) from exc

    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.returncode is not None:
            raise CompareError(
                f"{spec.name} exited with code {proc.returncode} before accepting connections.\n"
                f"  command: {shlex.join(spec.argv)}\n"
                f"  stderr:\n{_indent(_tail(stderr_path))}\n"
                f"{spec.hint}"
            )
        try:
            with socket.create_connection(("127.0.0.1", spec.port), timeout=0.5):
                pass
        except OSError:
            pass
        else:
            log(f"[compare] {spec.name} is accepting connections on port {spec.port}")
            return proc, stderr_path
        if time.monotonic() > deadline:
            await stop_server(spec.name, proc)
            raise CompareError(
                f"{spec.name} did not accept TCP connections on 127.0.0.1:{spec.port} within "
                f"{startup_timeout:g} s.\n"
                f"  command: {shlex.join(spec.argv)}\n"
                f"  stderr:\n{_indent(_tail(stderr_path))}\n"
                f"Check that the command listens on the port it is given, or raise "
                f"--startup-timeout. {spec.hint}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.1)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


async def stop_server(name: str, proc: asyncio.subprocess.Process) -> None:
    """SIGINT, then SIGTERM after 10 s, then SIGKILL; every wait is bounded."""
    steps: list[tuple[str, float]] = [
        ("SIGINT", STOP_GRACE_S),
        ("SIGTERM", KILL_GRACE_S),
        ("SIGKILL", KILL_GRACE_S),
    ]
    for sig_name, grace in steps:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(getattr(signal, sig_name))
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log(f"[compare] {name} still running {grace:g} s after {sig_name}")
            continue
        if sig_name != "SIGINT":
            log(f"[compare] {name} needed {sig_name} to stop")
        return
    log(f"[compare] warning: could not stop {name} (pid {proc.pid}); kill it by hand")


# -- load run ----------------------------------------------------------------------------------


async def run_load_process(
    run: ServerRun, server_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Run ``bench/load.py --json`` against the server; sample the server's CPU meanwhile."""
    argv = [
        sys.executable,
        str(LOAD_SCRIPT),
        "--url",
        run.spec.url,
        "--charge-points",
        str(args.charge_points),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--json",
    ]
    if args.connect_rate is not None:
        argv += ["--connect-rate", str(args.connect_rate)]
    # Same default as load.py; passed explicitly so that the budget below always covers it.
    per_cp = 0.01 if args.connect_rate is None else max(0.01, 1.0 / args.connect_rate)
    connect_phase = 60.0 + args.charge_points * per_cp
    argv += ["--connect-phase-timeout", f"{connect_phase:g}"]
    budget = connect_phase + args.warmup + args.duration + 60.0  # + shutdown and slack
    log(f"[compare] load: {shlex.join(argv)}")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_lines: list[str] = []
    cpu_start: float | None = None
    t_start = 0.0

    async def pump_stderr(stream: asyncio.StreamReader) -> None:
        nonlocal cpu_start, t_start
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            stderr_lines.append(line)
            log(f"  [{run.spec.name}] {line}")
            if line.startswith("[load] measure-start"):
                cpu_start, t_start = tree_cpu_seconds(server_pid), time.perf_counter()
            elif line.startswith("[load] measure-end") and cpu_start is not None:
                cpu_end = tree_cpu_seconds(server_pid)
                if cpu_end is not None:
                    window = time.perf_counter() - t_start
                    run.server_cpu_s = round(cpu_end - cpu_start, 3)
                    run.server_cpu_util = round((cpu_end - cpu_start) / window, 3)

    read_task = asyncio.create_task(proc.stdout.read())
    pump_task = asyncio.create_task(pump_stderr(proc.stderr))
    tasks: list[asyncio.Task[Any]] = [read_task, pump_task]
    try:
        _, pending = await asyncio.wait(tasks, timeout=budget)
        if pending:
            raise CompareError(
                f"the load generator did not finish within {budget:.0f} s against "
                f"{run.spec.name}; the server may be stuck — try fewer --charge-points "
                "or a --connect-rate"
            )
        stdout = read_task.result()
        pump_task.result()
        await asyncio.wait_for(proc.wait(), 10)
    finally:  # also on Ctrl+C: never leave the load generator behind
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        last = "\n".join(stderr_lines[-5:])
        raise CompareError(
            f"the load generator failed (exit code {proc.returncode}) against "
            f"{run.spec.name}:\n{_indent(last)}\n"
            f"Run it by hand to investigate: {shlex.join(argv)}"
        )
    try:
        result: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise CompareError(
            f"the load generator printed no JSON result ({exc}); "
            f"run it by hand to investigate: {shlex.join(argv)}"
        ) from exc
    return result


async def bench_server(spec: ServerSpec, args: argparse.Namespace, log_dir: Path) -> ServerRun:
    run = ServerRun(spec)
    proc: asyncio.subprocess.Process | None = None
    try:
        if spec.register_id_tags:
            log(f"[compare] registering {args.charge_points} idTags (kilowatt id-tag import)")
            try:
                await register_id_tags(args.charge_points, spec.env, REPO_ROOT)
            except LoadError as exc:
                raise CompareError(str(exc)) from exc
        proc, _ = await start_server(spec, log_dir, args.startup_timeout)
        run.load = await run_load_process(run, proc.pid, args)
        if proc.returncode is not None:
            run.notes.append(f"server exited during the run (code {proc.returncode})")
    except CompareError as exc:
        run.error = str(exc)
        log(f"[compare] error: {exc}")
    finally:
        if proc is not None:
            await stop_server(spec.name, proc)
    return run


# -- report --------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    if pct:
        return f"{value:.0%}"
    return f"{value:,.{digits}f}"


def markdown_report(runs: list[ServerRun], args: argparse.Namespace, command: str) -> str:
    header = (
        "| server | charge points | msgs/s | p50 ms | p99 ms | max ms | errors "
        "| server CPU | server CPU-s / 1k calls | load-gen CPU | load-gen CPU-s / 1k calls |"
    )
    lines = [
        f"## OCPP 1.6J load: {args.charge_points} charge points, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for run in runs:
        name = run.spec.name if args.rounds == 1 else f"{run.spec.name} (round {run.round})"
        load = run.load
        if load is None:
            lines.append(f"| {name} | {args.charge_points} | failed: see stderr |" + " |" * 8)
            continue
        lines.append(
            f"| {name} | {load['connected']}/{load['charge_points']} "
            f"| {_fmt(load['msgs_per_s'], 0)} | {_fmt(load['p50_ms'])} "
            f"| {_fmt(load['p99_ms'])} | {_fmt(load['max_ms'])} | {load['errors']} "
            f"| {_fmt(run.server_cpu_util, pct=True)} | {_fmt(run.server_cpu_per_1000(), 3)} "
            f"| {_fmt(load['cpu_util'], pct=True)} | {_fmt(load['cpu_s_per_1000_calls'], 3)} |"
        )
    lines.append("")
    ratio = throughput_ratio(runs)
    if ratio is not None:
        per_round = round_ratios(runs)
        if len(per_round) > 1:
            each = ", ".join(f"{value:.2f}×" for value in per_round)
            lines.append(f"**Kilowatt / baseline throughput: {ratio:.2f}× (median of {each})**")
        else:
            lines.append(f"**Kilowatt / baseline throughput: {ratio:.2f}×**")
        lines.append("")
    lines += [
        "- msgs/s = OCPP CALLs answered per second (each CALL is one request and one answer "
        "frame); every charge point keeps exactly one CALL outstanding.",
        "- CPU columns: share of one core during the measurement window; "
        "CPU-s / 1k calls = CPU seconds spent per 1000 answered CALLs.",
        "- Baseline event loop: "
        + (
            "uvloop (`--uvloop`), because Kilowatt runs on uvloop too; "
            "pass `--no-uvloop-baseline` for the stock asyncio loop."
            if args.uvloop_baseline
            else "the stock asyncio loop (`--no-uvloop-baseline`); Kilowatt uses uvloop."
        ),
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}. "
        "Servers ran one at a time; the load generator ran in its own process."
        + (
            f" {args.rounds} rounds, the servers alternately; each round's ratio is its own "
            "Kilowatt run against its own baseline run."
            if args.rounds > 1
            else ""
        ),
    ]
    for run in runs:
        lines += [f"- {run.spec.name}: {note}" for note in run.notes]
        if run.load and run.load.get("rejected"):
            lines.append(
                f"- {run.spec.name}: {run.load['rejected']} answers were not 'Accepted' "
                "(Boot or idTagInfo status)"
            )
        if run.load and run.load.get("first_errors"):
            lines.append(f"- {run.spec.name}: first errors: {run.load['first_errors'][:3]}")
    lines += ["", "Reproduce with:", "", "```", command, "```"]
    return "\n".join(lines)


def round_ratios(runs: list[ServerRun]) -> list[float]:
    """Kilowatt's throughput over the baseline's, round by round (rounds where either
    failed are left out)."""
    ratios: list[float] = []
    for number in sorted({run.round for run in runs}):
        by_name = {run.spec.name: run.load for run in runs if run.round == number}
        kilowatt, baseline = by_name.get("kilowatt"), by_name.get("baseline")
        if kilowatt and baseline and baseline["msgs_per_s"]:
            ratios.append(float(kilowatt["msgs_per_s"]) / float(baseline["msgs_per_s"]))
    return ratios


def throughput_ratio(runs: list[ServerRun]) -> float | None:
    """The median of :func:`round_ratios` (the ratio itself with one round)."""
    ratios = round_ratios(runs)
    return statistics.median(ratios) if ratios else None


def reproduce_command(args: argparse.Namespace) -> str:
    """The full command line with every option spelled out."""
    argv = [
        *script_command(__file__),
        "--charge-points",
        str(args.charge_points),
        "--duration",
        f"{args.duration:g}",
        "--warmup",
        f"{args.warmup:g}",
        "--uvloop-baseline" if args.uvloop_baseline else "--no-uvloop-baseline",
    ]
    if args.rounds != 1:
        argv += ["--rounds", str(args.rounds)]
    if args.only:
        argv += ["--only", args.only]
    if args.connect_rate is not None:
        argv += ["--connect-rate", f"{args.connect_rate:g}"]
    if args.kilowatt_cmd != DEFAULT_KILOWATT_CMD:
        argv += ["--kilowatt-cmd", args.kilowatt_cmd]
    if args.kilowatt_url != DEFAULT_KILOWATT_URL:
        argv += ["--kilowatt-url", args.kilowatt_url]
    return shlex.join(argv)


# -- main ----------------------------------------------------------------------------------------


def build_specs(args: argparse.Namespace) -> list[ServerSpec]:
    env = {**os.environ, **SERVER_ENV}
    specs: list[ServerSpec] = []
    if args.only in (None, "kilowatt"):
        port = free_port()
        try:
            command = args.kilowatt_cmd.format(python=shlex.quote(sys.executable), port=port)
            url = args.kilowatt_url.format(port=port)
        except (KeyError, IndexError, ValueError) as exc:
            raise CompareError(
                f"--kilowatt-cmd / --kilowatt-url may only use the placeholders {{port}} and "
                f"{{python}} ({exc}); escape other braces as {{{{ }}}}"
            ) from exc
        specs.append(
            ServerSpec(
                name="kilowatt",
                argv=shlex.split(command),
                url=url,
                port=port,
                env=env,
                hint="Make sure Kilowatt is installed in this environment "
                "(`pip install -e .`), or point --kilowatt-cmd at the right command.",
                # `kilowatt serve` authorizes against its database: the idTags are
                # registered, so that sessions are Accepted as in a real network.
                register_id_tags=args.kilowatt_cmd == DEFAULT_KILOWATT_CMD,
            )
        )
    if args.only in (None, "baseline"):
        port = free_port()
        argv = [sys.executable, str(BASELINE_SCRIPT), "--host", "127.0.0.1", "--port", str(port)]
        if args.uvloop_baseline:
            argv.append("--uvloop")
        specs.append(
            ServerSpec(
                name="baseline",
                argv=argv,
                url=f"ws://127.0.0.1:{port}/ocpp/",
                port=port,
                env=env,
                hint="Install the benchmark dependencies (ocpp==2.1.0, websockets, uvloop) "
                "in this environment, or use --no-uvloop-baseline if uvloop is missing.",
            )
        )
    return specs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark Kilowatt against a baseline 'ocpp'-package Central System."
    )
    parser.add_argument("--charge-points", type=int, default=100, help="default 100")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds before measuring (default 2)"
    )
    parser.add_argument(
        "--only", choices=["kilowatt", "baseline"], default=None, help="run one server only"
    )
    parser.add_argument(
        "--uvloop-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the baseline on uvloop, as Kilowatt does (default: on)",
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=None,
        help="new connections per second for the load generator (default unlimited)",
    )
    parser.add_argument(
        "--kilowatt-cmd",
        default=DEFAULT_KILOWATT_CMD,
        help="command that starts Kilowatt; {port} and {python} are filled in "
        f"(default: {DEFAULT_KILOWATT_CMD!r})",
    )
    parser.add_argument(
        "--kilowatt-url",
        default=DEFAULT_KILOWATT_URL,
        help=f"base URL of Kilowatt's OCPP endpoint (default: {DEFAULT_KILOWATT_URL!r})",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a server to accept connections (default 30)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the servers alternately this many times (Kilowatt, baseline, Kilowatt, …) "
        "and report the median of the rounds' ratios: the machine's speed drifts, and each "
        "round compares runs a few seconds apart (default 1)",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    if args.charge_points < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("need --charge-points >= 1, --duration > 0, --warmup >= 0 and --rounds >= 1")
    return args


async def amain(args: argparse.Namespace) -> int:
    if (os.cpu_count() or 1) < 2:
        log(
            "[compare] warning: fewer than 2 CPUs; the load generator and the server share a "
            "core, so the figures understate the server"
        )
    specs = build_specs(args)
    command = reproduce_command(args)
    runs: list[ServerRun] = []
    with tempfile.TemporaryDirectory(prefix="kilowatt-bench-") as tmp:
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                log(f"[compare] round {number} of {args.rounds}")
            for spec in specs:
                run = await bench_server(spec, args, Path(tmp))
                run.round = number
                runs.append(run)

    report = markdown_report(runs, args, command)
    print(report, flush=True)
    if args.json_out is not None:
        payload: dict[str, Any] = {
            "command": command,
            "config": {
                "charge_points": args.charge_points,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "connect_rate": args.connect_rate,
                "uvloop_baseline": args.uvloop_baseline,
                "rounds": args.rounds,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "runs": [run.to_dict() for run in runs],
            "ratio_msgs_per_s": throughput_ratio(runs),
            "ratios_by_round": round_ratios(runs),
            "markdown": report,
        }
        if not write_json(args.json_out, payload, "compare"):
            return 1
    return 1 if any(run.error for run in runs) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except CompareError as exc:
        log(f"[compare] error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("[compare] interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
