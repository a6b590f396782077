"""The serving process's interpreter settings (GIL switch interval, frozen heap)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from kilowatt import app
from kilowatt.app import tune_interpreter
from kilowatt.config import Settings


def test_tune_interpreter_sets_the_switch_interval_and_freezes_the_heap() -> None:
    before = sys.getswitchinterval()
    try:
        tune_interpreter(Settings(gil_switch_interval=0.0007))
        assert sys.getswitchinterval() == pytest.approx(0.0007)
        frozen = gc.get_freeze_count()
        assert frozen > 0

        # What survives a full collection is frozen too: the next ones skip it.
        survivors = [[n] for n in range(10_000)]
        gc.collect()
        assert gc.get_freeze_count() >= frozen + len(survivors)
        tune_interpreter(Settings())  # once more: the hook is not added twice
        assert gc.callbacks.count(app._freeze_survivors) == 1
    finally:
        sys.setswitchinterval(before)
        gc.callbacks.remove(app._freeze_survivors)
        gc.unfreeze()


async def test_serving_thaws_and_collects_everything_once_in_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "THAW_INTERVAL", 0.01)
    before = sys.getswitchinterval()
    try:
        tune_interpreter(Settings())
        cycle: list[object] = []
        cycle.append(cycle)
        gc.collect()  # alive: frozen
        assert gc.is_tracked(cycle)
        collected = []
        gc.callbacks.append(
            lambda phase, info: collected.append(info["generation"]) if phase == "stop" else None
        )
        del cycle  # garbage now, but frozen: only a thaw frees it
        await asyncio.sleep(0.05)
        assert 2 in collected
    finally:
        sys.setswitchinterval(before)
        gc.callbacks[:] = [c for c in gc.callbacks if c is not app._freeze_survivors]
        gc.callbacks.pop()
        gc.unfreeze()


def test_the_default_switch_interval_is_shorter_than_pythons() -> None:
    assert Settings().gil_switch_interval < 0.005


@pytest.mark.parametrize("value", [0, -1, 2])
def test_a_switch_interval_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ValidationError, match="gil_switch_interval"):
        Settings(gil_switch_interval=value)


def _in_a_child(code: str) -> str:
    # Limits are per process: change them in a child, never in the test process.
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_open_file_limit_is_raised_to_the_hard_limit_never_lowered() -> None:
    out = _in_a_child(
        """
        import resource
        from kilowatt.process import raise_open_file_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        print(raise_open_file_limit(512), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print(raise_open_file_limit(300), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print(raise_open_file_limit() == min(hard, 2**62), hard)
        """
    )
    first, second, third = out.splitlines()
    assert first == "512 512"
    assert second == "512 512"  # not lowered
    assert third.split()[0] == "True"


def test_the_low_limit_warning_names_the_fix(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "raise_open_file_limit", lambda wanted=None: 1000)
    assert app.raise_file_limit() == 1000
    assert "ulimit -n" in caplog.text
    assert "open file limit is low" in caplog.text
