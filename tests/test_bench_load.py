"""The load generator's paced schedule and the capacity benchmark's verdict (bench/)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from capacity import Step, charge_point_list, judge, next_probe
from load import LoadError, bench_id_tag, plan_send, register_id_tags


def test_on_time_waits_for_its_slot() -> None:
    assert plan_send(slot=10.0, now=8.5, interval=5.0) == (10.0, 0, 15.0)
    assert plan_send(slot=10.0, now=10.0, interval=5.0) == (10.0, 0, 15.0)


def test_late_sends_at_once_and_keeps_the_grid() -> None:
    # Answer 2 s late: sent now, no slot skipped, the next one on the original grid.
    assert plan_send(slot=10.0, now=12.0, interval=5.0) == (12.0, 0, 15.0)


def test_slots_passed_while_waiting_are_skipped_not_made_up() -> None:
    # Slots 10, 15 and 20 passed; one CALL goes now, two slots are skipped.
    assert plan_send(slot=10.0, now=21.0, interval=5.0) == (21.0, 2, 25.0)
    # Exactly on a later slot: that slot counts as passed.
    assert plan_send(slot=10.0, now=15.0, interval=5.0) == (15.0, 1, 20.0)


def test_a_late_charge_point_never_exceeds_its_rate() -> None:
    """However late the answers, the CALLs sent over a long run stay within one per slot."""
    interval, slot, now, sent = 1.0, 0.0, 0.0, 0
    for latency in [0.1, 2.7, 0.2, 0.0, 5.5, 0.9, 1.3] * 20:
        send_at, _, slot = plan_send(slot, now, interval)
        assert slot > send_at
        sent += 1
        now = send_at + latency  # the answer frees the charge point
    assert sent <= now / interval + 1


def _step(**values: float) -> Step:
    step = Step(charge_points=100, offered_rate=2000.0, warmup_s=5.0)
    step.connected = 100
    for name, value in values.items():
        setattr(step, name, value)
    return step


def test_verdict() -> None:
    assert judge(_step(p99_ms=49.9, kib_per_connection=30.0), 50.0, 30.0) == []
    failures = judge(
        _step(connected=99, failed_connections=1, p99_ms=50.0, kib_per_connection=30.5),
        50.0,
        30.0,
    )
    assert failures == [
        "99/100 connected, 1 failed connections",
        "p99 50.0 ms >= 50 ms",
        "30.5 KiB/connection > 30 KiB",
    ]


def test_charge_point_list() -> None:
    assert charge_point_list("1000,5_000, 10000") == [1000, 5000, 10000]
    with pytest.raises(argparse.ArgumentTypeError):
        charge_point_list("1000,x")


def test_max_search_steps_up_then_halves_the_gap() -> None:
    probe = lambda passed, failed: next_probe(passed, failed, 5000, 1000, 19_000)  # noqa: E731
    assert probe([1000, 5000, 10000], []) == 15000  # all passed: up a step
    assert probe([1000, 5000, 10000, 15000], []) is None  # the next step exceeds the ceiling
    assert probe([1000], [5000, 10000]) == 3000  # halve between the pass and the failure
    assert probe([1000, 3000], [5000, 10000]) == 4000
    assert probe([1000, 3000, 4000], [5000, 10000]) is None  # within the resolution
    assert probe([], [5000]) == 2500  # nothing passed: from 0


async def test_the_load_generators_id_tags_are_registered_accepted(tmp_path: Path) -> None:
    """What compare.py, transactions.py and capacity.py do before they start the server:
    the idTags the simulated charge points use, in the server's database, Accepted."""
    from kilowatt.store.sql.database import open_store

    url = f"sqlite:///{tmp_path / 'bench.db'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("KILOWATT_")}
    env["KILOWATT_DATABASE_URL"] = url
    await register_id_tags(3, env, tmp_path)
    await register_id_tags(3, env, tmp_path)  # again: those already there are kept

    store = open_store(url)
    try:
        tags = await store.read(lambda repos: repos.id_tags.list_id_tags())
    finally:
        await store.close()
    assert sorted(tag.id_tag for tag in tags) == [bench_id_tag(n) for n in range(3)]
    assert {tag.status for tag in tags} == {"Accepted"}


async def test_a_failed_registration_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "KILOWATT_DATABASE_URL": "nosuchdb://x"}
    with pytest.raises(LoadError, match="id-tag import"):
        await register_id_tags(1, env, tmp_path)


async def test_the_benchmarks_postgresql_flushes_every_commit(durable_postgres_url: str) -> None:
    # The benchmarks' persisted figures mean durable commits on PostgreSQL too: its
    # defaults, not the tests' fast settings (fsync off).
    import asyncpg

    from tests.servers import asyncpg_dsn

    connection = await asyncpg.connect(asyncpg_dsn(durable_postgres_url))
    try:
        settings = {
            name: await connection.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        }
    finally:
        await connection.close()
    assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
