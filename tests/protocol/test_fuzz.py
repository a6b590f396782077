"""Random frames never make the session raise; it answers validly or drops."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from kilowatt.protocol.errors import ErrorCode
from kilowatt.protocol.frames import Call
from kilowatt.protocol.session import Dropped, Flooded, Rejected, Settled
from tests.protocol.conftest import _SPEC, make_session

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
actions = st.sampled_from(sorted(_SPEC.known)) | st.text(max_size=20)
payloads = st.dictionaries(
    st.sampled_from(["connectorId", "idTag", "status", "errorCode", "meterValue", "timestamp", "x"])
    | st.text(max_size=8),
    json_values,
    max_size=5,
)
frames = st.one_of(
    st.tuples(st.just(2), st.text(max_size=40), actions, payloads).map(list),
    st.tuples(st.sampled_from([3, 4]), st.text(max_size=40), payloads).map(list),
    st.lists(json_values, max_size=6),
    json_values,
)
CODES = {code.value for code in ErrorCode}


def check(event: Any) -> None:
    if isinstance(event, Rejected):
        frame = orjson.loads(event.frame)
        assert frame[0] == 4 and len(frame) == 5
        assert isinstance(frame[1], str) and frame[2] in CODES
        assert isinstance(frame[3], str) and isinstance(frame[4], dict)
    else:
        assert isinstance(event, Call | Dropped | Flooded | Settled)


@settings(max_examples=600, deadline=None)
@given(frames)
def test_random_frames(frame: Any) -> None:
    session = make_session(bad_frame_limit=10_000)
    check(session.receive(orjson.dumps(frame), 0.0))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_random_bytes(data: bytes | str) -> None:
    session = make_session(bad_frame_limit=10_000)
    check(session.receive(data, 0.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, max_size=8))
def test_random_answers_while_calls_are_outstanding(answers: list[Any]) -> None:
    session = make_session(bad_frame_limit=10_000)
    session.call("ClearCache", {}, 0.0)
    session.call("Reset", {"type": "Soft"}, 0.0)
    for answer in answers:
        if isinstance(answer, list) and len(answer) > 1 and answer[0] in (3, 4):
            answer[1] = "id-1"
        check(session.receive(orjson.dumps(answer), 0.0))
