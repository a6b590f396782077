"""The README documents every setting, and keeps the two newcomer commands."""

from __future__ import annotations

from pathlib import Path

from kilowatt.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    for name in Settings.model_fields:
        assert f"| `{name}` | `KILOWATT_{name.upper()}` |" in README, name


def test_the_newcomer_commands() -> None:
    assert ".venv/bin/pip install -e . && .venv/bin/kilowatt serve" in README
    assert "bash scripts/test.sh" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
