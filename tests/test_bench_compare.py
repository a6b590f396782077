"""The side-by-side benchmark's rounds (bench/compare.py --rounds): the servers run
alternately, and the ratio is the median of each round's own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import compare
from compare import ServerRun, ServerSpec, parse_args, round_ratios, throughput_ratio


def _run(name: str, number: int, msgs_per_s: float) -> ServerRun:
    spec = ServerSpec(name=name, argv=[name], url="ws://x/", port=1, env={}, hint="")
    load = {"msgs_per_s": msgs_per_s, "calls": 1000}
    return ServerRun(spec, load=load, round=number)


def test_each_round_is_compared_with_itself_and_the_median_is_the_ratio() -> None:
    runs = [
        _run("kilowatt", 1, 12_000),
        _run("baseline", 1, 4_000),  # 3.0×
        _run("kilowatt", 2, 13_000),
        _run("baseline", 2, 3_250),  # 4.0×
        _run("kilowatt", 3, 14_000),
        _run("baseline", 3, 4_000),  # 3.5×
    ]
    assert round_ratios(runs) == [3.0, 4.0, 3.5]
    assert throughput_ratio(runs) == 3.5
    # Not the ratio of the means (13,000 / 3,750 = 3.47) nor of one round to another.


def test_a_round_where_a_server_failed_is_left_out() -> None:
    failed = ServerRun(_run("baseline", 2, 0).spec, load=None, error="did not start", round=2)
    runs = [_run("kilowatt", 1, 12_000), _run("baseline", 1, 4_000), _run("kilowatt", 2, 9), failed]
    assert round_ratios(runs) == [3.0]
    assert throughput_ratio([_run("kilowatt", 1, 12_000)]) is None


async def test_rounds_alternate_the_servers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    order: list[str] = []
    rates = iter([12_000.0, 4_000.0, 13_000.0, 3_250.0])

    async def fake_bench(spec: ServerSpec, args: argparse.Namespace, log_dir: Path) -> ServerRun:
        order.append(spec.name)
        load: dict[str, Any] = {
            "msgs_per_s": next(rates),
            "calls": 1000,
            "connected": 2,
            "charge_points": 2,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "max_ms": 3.0,
            "errors": 0,
            "cpu_util": 0.1,
            "cpu_s_per_1000_calls": 0.01,
        }
        return ServerRun(spec, load=load)

    monkeypatch.setattr(compare, "bench_server", fake_bench)
    args = parse_args(["--rounds", "2", "--charge-points", "2"])
    assert await compare.amain(args) == 0

    assert order == ["kilowatt", "baseline", "kilowatt", "baseline"]
    out = capsys.readouterr().out
    assert "| kilowatt (round 2) |" in out
    assert "3.50× (median of 3.00×, 4.00×)" in out
    assert "--rounds 2" in out  # the command that reproduces it


def test_rounds_must_be_at_least_one() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])
