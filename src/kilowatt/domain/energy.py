"""Plausibility of a finished transaction's energy (meterStop − meterStart, in Wh).

A charge point's numbers are not taken as truth blindly: a negative difference, an
absurd amount, or an average power no charger can deliver is *flagged* and the
energy left empty, while the raw meter readings stay stored for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["EnergyLimits", "assess_energy", "timestamp_flags"]


@dataclass(frozen=True, slots=True)
class EnergyLimits:
    max_energy_wh: int = 1_000_000  # 1 MWh: more than any vehicle battery
    max_power_w: int = 1_000_000  # 1 MW average: beyond any 1.6 charger
    max_clock_skew: timedelta = timedelta(days=1)


def assess_energy(
    meter_start: int,
    meter_stop: int,
    started_at: datetime,
    stopped_at: datetime,
    limits: EnergyLimits,
) -> tuple[int | None, list[str]]:
    """Return (energy in Wh or None when implausible, flags)."""
    flags: list[str] = []
    energy = meter_stop - meter_start
    if stopped_at < started_at:
        flags.append("stop_before_start")
    if energy < 0:
        flags.append("negative_energy")
    elif energy > limits.max_energy_wh:
        flags.append("absurd_energy")
    else:
        hours = (stopped_at - started_at).total_seconds() / 3600
        if hours > 0 and energy / hours > limits.max_power_w:
            flags.append("implausible_power")
    plausible = not {"negative_energy", "absurd_energy", "implausible_power"} & set(flags)
    return (energy if plausible else None), flags


def timestamp_flags(timestamp: datetime, now: datetime, limits: EnergyLimits) -> list[str]:
    """Flags for a charge point's timestamp far from the Central System's clock."""
    if timestamp > now + limits.max_clock_skew:
        return ["timestamp_in_future"]
    return []
