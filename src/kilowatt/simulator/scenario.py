"""Scenario files: how the simulated charge points and their drivers behave.

A scenario is a small TOML (``.toml``) or JSON (``.json``) document of flat keys,
all optional (``docs/simulator.md`` has the reference); ``builtin`` names the
default, :data:`BUILTIN`. A duration or amount written as one number is fixed;
written as ``[low, high]`` each session draws it uniformly from that range.
"""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

__all__ = ["BUILTIN", "Range", "Scenario", "ScenarioError", "load_scenario", "sample"]


class ScenarioError(Exception):
    """The scenario cannot be used; the message says what to change."""


def _to_range(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value, value)
    return value


def _check_range(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if low < 0 or high < low:
        raise ValueError("a range is [low, high] with 0 <= low <= high")
    return value


Range = Annotated[tuple[float, float], BeforeValidator(_to_range), AfterValidator(_check_range)]
"""A fixed number (``30``) or a range to draw from (``[10, 60]``)."""


def sample(rng: random.Random, value: tuple[float, float]) -> float:
    low, high = value
    return low if low == high else rng.uniform(low, high)


IdTag = Annotated[str, Field(min_length=1, max_length=20)]


class Scenario(BaseModel):
    """What the simulated charge points do (see ``docs/simulator.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "builtin"
    description: str = ""
    # BootNotification
    vendor: str = Field("Kilowatt", min_length=1, max_length=20)
    model: str = Field("SimCP-22", min_length=1, max_length=20)
    firmware_version: str = Field("1.0.0", min_length=1, max_length=50)
    # Sessions
    idle_seconds: Range = (60.0, 600.0)
    session_seconds: Range = (300.0, 1800.0)
    meter_interval: int = Field(30, ge=1)
    id_tags: tuple[IdTag, ...] = ()
    authorize: bool = True
    local_stop: float = Field(0.7, ge=0, le=1)
    remote_start_only: float = Field(0.0, ge=0, le=1)
    remote_start_wait: int = Field(120, ge=1)
    stop_on_invalid_id: bool = True
    # Electricity
    max_power_w: float = Field(11000.0, gt=0)
    ev_max_power_w: Range = (7400.0, 22000.0)
    battery_wh: Range = (40000.0, 80000.0)
    start_soc: Range = (10.0, 60.0)
    voltage: float = Field(230.0, gt=0)
    phases: int = Field(3, ge=1, le=3)
    # Reset
    reboot_seconds: float = Field(2.0, ge=0)


BUILTIN = Scenario(
    description="Cars arrive every 1-10 minutes, charge 5-30 minutes; meter values every 30 s."
)


def load_scenario(source: str | Path) -> Scenario:
    """``builtin`` or a ``.toml``/``.json`` file; raises :class:`ScenarioError`."""
    if str(source) == "builtin":
        return BUILTIN
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read the scenario {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".toml":
            document: Any = tomllib.loads(raw.decode())
        elif path.suffix == ".json":
            document = json.loads(raw)
        else:
            raise ScenarioError(f"{path}: a scenario is a .toml or .json file (or 'builtin')")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(document, dict):
        raise ScenarioError(f"{path}: a scenario is a table of keys (see docs/simulator.md)")
    document.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        lines = [f"invalid scenario {path}:"]
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "scenario"
            if error["type"] == "extra_forbidden":
                lines.append(f"  {where}: unknown key (see docs/simulator.md)")
            else:
                lines.append(f"  {where}: {error['msg']}")
        raise ScenarioError("\n".join(lines)) from None
