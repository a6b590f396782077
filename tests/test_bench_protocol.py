"""The protocol-path benchmark's harness (bench/protocol.py): both sides route every
charge point's frame each round, and each answers every one."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from protocol import MESSAGES, baseline_route, compare, kilowatt_route


async def test_a_round_routes_the_frame_through_every_charge_point_on_both_sides() -> None:
    for message in MESSAGES.values():
        ours, ours_sink = kilowatt_route(charge_points=3)
        theirs, theirs_sink = baseline_route(charge_points=3)

        await ours(message)
        await theirs(message)

        assert ours_sink.sent == 3
        assert theirs_sink.sent == 3


async def test_kilowatt_s_side_answers_with_a_call_result() -> None:
    frames: list[bytes] = []
    ours, sink = kilowatt_route(charge_points=2)
    sink.send_text = frames.append  # type: ignore[method-assign]

    await ours(MESSAGES["MeterValues"])

    assert [orjson.loads(frame) for frame in frames] == [[3, "m-3", {}], [3, "m-3", {}]]


async def test_compare_measures_both_sides_over_their_slices() -> None:
    ours, ours_sink = kilowatt_route(charge_points=5)
    theirs, theirs_sink = baseline_route(charge_points=5)

    ours_rate, theirs_rate = await compare(ours, theirs, MESSAGES["Heartbeat"], 0.04, 5)

    assert ours_rate > 0 and theirs_rate > 0
    # Warm-up (40 rounds) and four slices of at least 200 rounds each, of five.
    assert ours_sink.sent % 5 == 0 and ours_sink.sent >= 5 * (40 + 4 * 200)
    assert theirs_sink.sent % 5 == 0 and theirs_sink.sent >= 5 * (40 + 4 * 200)
