"""The serving process's interpreter settings (GIL switch interval, frozen heap)."""

from __future__ import annotations

import gc
import sys

import pytest
from pydantic import ValidationError

from kilowatt.app import tune_interpreter
from kilowatt.config import Settings


def test_tune_interpreter_sets_the_switch_interval_and_freezes_the_heap() -> None:
    before = sys.getswitchinterval()
    try:
        tune_interpreter(Settings(gil_switch_interval=0.0007))
        assert sys.getswitchinterval() == pytest.approx(0.0007)
        assert gc.get_freeze_count() > 0
    finally:
        sys.setswitchinterval(before)
        gc.unfreeze()


def test_the_default_switch_interval_is_shorter_than_pythons() -> None:
    assert Settings().gil_switch_interval < 0.005


@pytest.mark.parametrize("value", [0, -1, 2])
def test_a_switch_interval_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ValidationError, match="gil_switch_interval"):
        Settings(gil_switch_interval=value)
