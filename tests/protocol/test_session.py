from __future__ import annotations

import orjson
import pytest

from kilowatt.protocol.errors import (
    CallErrorReceived,
    CallTimeout,
    NotConnected,
    OutgoingValidationError,
)
from kilowatt.protocol.frames import Call
from kilowatt.protocol.session import (
    Dropped,
    Flooded,
    InvalidCallResult,
    Rejected,
    Session,
    Settled,
)
from tests.protocol.conftest import make_session

BOOT = '[2, "b1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]'


def wire(frame: bytes | None) -> list[object]:
    assert frame is not None
    decoded: list[object] = orjson.loads(frame)
    return decoded


# ---------------------------------------------------------------- incoming


def test_valid_call_is_routed(session: Session) -> None:
    event = session.receive(BOOT, 0.0)
    assert isinstance(event, Call)
    assert event.action == "BootNotification"


def test_unknown_action_is_not_implemented(session: Session) -> None:
    event = session.receive('[2, "x", "Dance", {}]', 0.0)
    assert isinstance(event, Rejected)
    assert wire(event.frame)[:3] == [4, "x", "NotImplemented"]


def test_action_for_the_other_direction_is_not_supported(session: Session) -> None:
    event = session.receive('[2, "x", "Reset", {"type": "Hard"}]', 0.0)
    assert isinstance(event, Rejected)
    assert wire(event.frame)[:3] == [4, "x", "NotSupported"]


def test_known_but_disabled_action_is_not_supported() -> None:
    session = make_session(handled={"Heartbeat"})
    event = session.receive(BOOT, 0.0)
    assert isinstance(event, Rejected)
    assert wire(event.frame)[:3] == [4, "b1", "NotSupported"]


def test_disabled_action_is_refused_before_its_payload_is_checked() -> None:
    session = make_session(handled={"Heartbeat"})
    event = session.receive('[2, "x", "BootNotification", {"nonsense": 1}]', 0.0)
    assert isinstance(event, Rejected)
    assert event.error.code == "NotSupported"


def test_invalid_payload_gets_the_mapped_code(session: Session) -> None:
    event = session.receive('[2, "h", "Heartbeat", {"x": 1}]', 0.0)
    assert isinstance(event, Rejected)
    frame = wire(event.frame)
    assert frame[:3] == [4, "h", "FormationViolation"]
    assert frame[4] == {"path": "payload", "rule": "additionalProperties"}


def test_broken_call_with_usable_id_is_answered(session: Session) -> None:
    event = session.receive('[2, "z", "Heartbeat"]', 0.0)
    assert isinstance(event, Rejected)
    assert wire(event.frame)[:3] == [4, "z", "FormationViolation"]


def test_unknown_message_type_is_ignored(session: Session) -> None:
    # OCPP-J 1.6 §4.1.3: "a Message Type Number not in this list ... SHALL be ignored".
    for text in ('[7, "z", {}]', '[true, "z", "Heartbeat", {}]', '["2", "z", "Heartbeat", {}]'):
        assert isinstance(session.receive(text, 0.0), Dropped)


@pytest.mark.parametrize("text", ["garbage", "[]", '{"a": 1}', '[2, 17, "Heartbeat", {}]'])
def test_frames_without_usable_id_are_dropped(session: Session, text: str) -> None:
    assert isinstance(session.receive(text, 0.0), Dropped)


def test_binary_messages_are_dropped(session: Session) -> None:
    assert isinstance(session.receive_binary(0.0), Dropped)


def test_flood_of_invalid_frames_is_reported() -> None:
    session = make_session(bad_frame_limit=3, bad_frame_window=10.0)
    events = [session.receive("garbage", 1.0) for _ in range(4)]
    assert [type(e) for e in events] == [Dropped, Dropped, Dropped, Flooded]


def test_invalid_frame_budget_renews_after_the_window() -> None:
    session = make_session(bad_frame_limit=2, bad_frame_window=10.0)
    assert isinstance(session.receive("x", 1.0), Dropped)
    assert isinstance(session.receive("x", 2.0), Dropped)
    assert isinstance(session.receive("x", 20.0), Dropped)
    assert isinstance(session.receive("x", 21.0), Dropped)
    assert isinstance(session.receive("x", 22.0), Flooded)


def test_valid_frames_do_not_use_the_budget() -> None:
    session = make_session(bad_frame_limit=1)
    for _ in range(5):
        assert isinstance(session.receive('[2, "h", "Heartbeat", {}]', 0.0), Call)


# ------------------------------------------------------------ our answers


def test_result_frame_is_validated(session: Session) -> None:
    call = session.receive('[2, "h", "Heartbeat", {}]', 0.0)
    assert isinstance(call, Call)
    frame = session.result_frame(call, {"currentTime": "2026-01-01T00:00:00.000Z"})
    assert wire(frame) == [3, "h", {"currentTime": "2026-01-01T00:00:00.000Z"}]
    with pytest.raises(OutgoingValidationError) as caught:
        session.result_frame(call, {"currentTime": 5})
    assert caught.value.action == "HeartbeatResponse"
    assert caught.value.error.code == "TypeConstraintViolation"


# --------------------------------------------------------- outgoing calls


def test_call_goes_on_the_wire_and_its_result_settles_it(session: Session) -> None:
    pending, frame = session.call("Reset", {"type": "Soft"}, 10.0)
    assert wire(frame) == [2, "id-1", "Reset", {"type": "Soft"}]
    assert pending.deadline == 10.0 + session.call_timeout
    event = session.receive('[3, "id-1", {"status": "Accepted"}]', 11.0)
    assert isinstance(event, Settled)
    assert event.call is pending
    assert event.result == {"status": "Accepted"}
    assert event.error is None
    assert event.next_frame is None
    assert session.in_flight is None


def test_only_one_call_outstanding_the_rest_wait_in_order(session: Session) -> None:
    first, frame1 = session.call("Reset", {"type": "Soft"}, 0.0)
    second, frame2 = session.call("ClearCache", {}, 0.0)
    third, frame3 = session.call("Reset", {"type": "Hard"}, 0.0)
    assert frame1 is not None and frame2 is None and frame3 is None
    assert session.queued == 2
    event = session.receive('[3, "id-1", {"status": "Accepted"}]', 5.0)
    assert isinstance(event, Settled) and event.call is first
    assert wire(event.next_frame) == [2, "id-2", "ClearCache", {}]
    assert second.deadline == 5.0 + session.call_timeout
    event = session.receive('[3, "id-2", {"status": "Accepted"}]', 6.0)
    assert isinstance(event, Settled) and event.call is second
    assert wire(event.next_frame) == [2, "id-3", "Reset", {"type": "Hard"}]
    assert session.in_flight is third


def test_answer_for_a_queued_call_id_is_dropped(session: Session) -> None:
    session.call("ClearCache", {}, 0.0)
    session.call("ClearCache", {}, 0.0)
    assert isinstance(session.receive('[3, "id-2", {"status": "Accepted"}]', 0.0), Dropped)
    assert session.in_flight is not None and session.in_flight.unique_id == "id-1"


def test_unknown_result_is_dropped(session: Session) -> None:
    assert isinstance(session.receive('[3, "never-sent", {}]', 0.0), Dropped)
    assert isinstance(session.receive('[4, "never-sent", "GenericError", "", {}]', 0.0), Dropped)


def test_call_error_settles_with_call_error_received(session: Session) -> None:
    session.call("ClearCache", {}, 0.0)
    event = session.receive('[4, "id-1", "NotSupported", "nope", {"x": 1}]', 0.0)
    assert isinstance(event, Settled)
    assert isinstance(event.error, CallErrorReceived)
    assert (event.error.code, event.error.description, event.error.details) == (
        "NotSupported",
        "nope",
        {"x": 1},
    )


def test_invalid_result_payload_fails_the_call(session: Session) -> None:
    session.call("ClearCache", {}, 0.0)
    event = session.receive('[3, "id-1", {"status": "Maybe"}]', 0.0)
    assert isinstance(event, Settled)
    assert isinstance(event.error, InvalidCallResult)
    assert event.error.error.code == "PropertyConstraintViolation"


def test_malformed_answer_to_our_call_fails_it_and_frees_the_slot(session: Session) -> None:
    session.call("ClearCache", {}, 0.0)
    session.call("ClearCache", {}, 0.0)
    event = session.receive('[3, "id-1", "not an object"]', 1.0)
    assert isinstance(event, Settled)
    assert isinstance(event.error, InvalidCallResult)
    assert wire(event.next_frame)[:2] == [2, "id-2"]


def test_timeout_fails_only_that_call_and_sends_the_next(session: Session) -> None:
    first, _ = session.call("ClearCache", {}, 0.0, timeout=5.0)
    second, _ = session.call("ClearCache", {}, 0.0, timeout=5.0)
    assert session.next_deadline() == 5.0
    assert session.expire(4.9) is None
    event = session.expire(5.0)
    assert isinstance(event, Settled)
    assert event.call is first
    assert isinstance(event.error, CallTimeout)
    assert wire(event.next_frame)[:2] == [2, "id-2"]
    assert second.deadline == 10.0
    # A late answer for the expired call is dropped, not matched to the next one.
    assert isinstance(session.receive('[3, "id-1", {"status": "Accepted"}]', 6.0), Dropped)
    assert session.in_flight is second


def test_close_fails_every_pending_call_at_once(session: Session) -> None:
    first, _ = session.call("ClearCache", {}, 0.0)
    second, _ = session.call("ClearCache", {}, 0.0)
    settled = session.close("gone")
    assert [s.call for s in settled] == [first, second]
    assert all(isinstance(s.error, NotConnected) for s in settled)
    assert all(s.next_frame is None for s in settled)
    with pytest.raises(NotConnected):
        session.call("ClearCache", {}, 0.0)


def test_cancel_withdraws_a_queued_call(session: Session) -> None:
    first, _ = session.call("ClearCache", {}, 0.0)
    second, _ = session.call("ClearCache", {}, 0.0)
    assert session.cancel(second) is True
    assert session.cancel(first) is False  # on the wire: stays outstanding
    event = session.receive('[3, "id-1", {"status": "Accepted"}]', 0.0)
    assert isinstance(event, Settled) and event.next_frame is None


def test_invalid_outgoing_payload_is_never_sent(session: Session) -> None:
    with pytest.raises(OutgoingValidationError) as caught:
        session.call("Reset", {"type": "Medium"}, 0.0)
    assert caught.value.error.code == "PropertyConstraintViolation"
    with pytest.raises(OutgoingValidationError):
        session.call("Heartbeat", {}, 0.0)  # a charge point's action, not ours
    assert session.in_flight is None


def test_incoming_call_while_our_call_is_outstanding(session: Session) -> None:
    session.call("ClearCache", {}, 0.0)
    assert isinstance(session.receive('[2, "cp-1", "Heartbeat", {}]', 0.0), Call)
    assert isinstance(session.receive('[3, "id-1", {"status": "Accepted"}]', 0.0), Settled)
