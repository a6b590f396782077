from __future__ import annotations

import orjson
import pytest

from kilowatt.protocol.errors import ErrorCode
from kilowatt.protocol.frames import (
    Call,
    CallErrorFrame,
    CallResult,
    MalformedFrame,
    Undeliverable,
    build_call,
    build_call_error,
    build_call_result,
    parse_frame,
)


def test_parse_call() -> None:
    frame = parse_frame('[2, "19223201", "BootNotification", {"chargePointVendor": "V"}]')
    assert isinstance(frame, Call)
    assert (frame.unique_id, frame.action, frame.payload) == (
        "19223201",
        "BootNotification",
        {"chargePointVendor": "V"},
    )


def test_parse_call_result_and_error_from_bytes() -> None:
    result = parse_frame(b'[3, "1", {"currentTime": "2013-02-01T20:53:32.486Z"}]')
    assert isinstance(result, CallResult)
    assert result.payload == {"currentTime": "2013-02-01T20:53:32.486Z"}
    error = parse_frame(b'[4, "1", "NotSupported", "no", {"a": 1}]')
    assert isinstance(error, CallErrorFrame)
    assert (error.code, error.description, error.details) == ("NotSupported", "no", {"a": 1})


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        "[]",
        "[2]",
        '"[2, 1]"',
        '[2, 5, "Heartbeat", {}]',
        '[2, null, "Heartbeat", {}]',
        "[2, 1.5]",
        b"\xff\xfe",
    ],
)
def test_undeliverable_frames(text: str | bytes) -> None:
    with pytest.raises(Undeliverable):
        parse_frame(text)


@pytest.mark.parametrize(
    ("text", "message_type"),
    [
        ('[2, "a", "Heartbeat"]', 2),
        ('[2, "a", "Heartbeat", {}, 1]', 2),
        ('[2, "a", 7, {}]', 2),
        ('[2, "a", "", {}]', 2),
        ('[2, "a", "Heartbeat", []]', 2),
        ('[3, "a"]', 3),
        ('[3, "a", "x"]', 3),
        ('[4, "a", "GenericError", "d"]', 4),
        ('[4, "a", 1, "d", {}]', 4),
        ('[4, "a", "GenericError", "d", []]', 4),
        ('[9, "a", {}]', 9),
        ('[true, "a", "Heartbeat", {}]', True),
        ('["2", "a", "Heartbeat", {}]', "2"),
        ('[2, "", "Heartbeat", {}]', 2),
        ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', 2),
    ],
)
def test_malformed_frames_keep_their_id(text: str, message_type: object) -> None:
    with pytest.raises(MalformedFrame) as caught:
        parse_frame(text)
    assert caught.value.message_type == message_type
    assert caught.value.error.code is ErrorCode.FORMATION_VIOLATION


def test_unique_id_of_36_characters_is_fine() -> None:
    frame = parse_frame('[2, "' + "x" * 36 + '", "Heartbeat", {}]')
    assert isinstance(frame, Call)


def test_builders_produce_wire_frames() -> None:
    assert orjson.loads(build_call("1", "Reset", {"type": "Hard"})) == [
        2,
        "1",
        "Reset",
        {"type": "Hard"},
    ]
    assert orjson.loads(build_call_result("1", {})) == [3, "1", {}]
    assert orjson.loads(build_call_error("1", "InternalError", "boom")) == [
        4,
        "1",
        "InternalError",
        "boom",
        {},
    ]
