"""``kilowatt ARGS...`` run in the test process, its output captured (CLI test suites)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kilowatt.cli import main
from kilowatt.config import Settings


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """``kilowatt ARGS...`` in this process; stdout and stderr captured."""

    def __init__(self, capsys: pytest.CaptureFixture[str], *, thread_timeout: float = 30.0) -> None:
        self._capsys = capsys
        self._thread_timeout = thread_timeout

    def __call__(self, *argv: str) -> Result:
        self._capsys.readouterr()
        code = main(list(argv))
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *argv: str) -> Result:
        result = self(*argv)
        assert result.code == 0, result
        return result

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--json").out)

    async def in_thread(self, *argv: str) -> Result:
        """Run it in a thread, while this event loop serves the app it talks to."""
        async with asyncio.timeout(self._thread_timeout):
            return await asyncio.to_thread(self, *argv)


def fresh_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *also_unset: str) -> Path:
    """``tmp_path`` as the working directory, and no KILOWATT_* setting (nor any of
    ``also_unset``) from the environment."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(f"KILOWATT_{name.upper()}", raising=False)
    for name in also_unset:
        monkeypatch.delenv(name, raising=False)
    return tmp_path
