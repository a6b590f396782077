"""Charging profiles of a simulated charge point (OCPP 1.6 §3.13): what limit applies now.

Per connector, each purpose's profile with the highest stack level that is in force
gives the purpose's limit; the connector may draw the lower of the ChargePointMaxProfile
limit (on connector 0, shared by the connectors that charge) and the TxProfile limit
(else the TxDefaultProfile limit, of the connector or else of connector 0). Current
limits (A) become power with the scenario's voltage and the period's number of phases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kilowatt.domain.timestamps import parse_timestamp

__all__ = ["InstalledProfile", "SmartCharging"]

CHARGE_POINT_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
RECURRENCE = {"Daily": 86_400.0, "Weekly": 604_800.0}


@dataclass(frozen=True, slots=True)
class InstalledProfile:
    connector_id: int
    profile: dict[str, Any]
    installed_at: datetime

    @property
    def id(self) -> int:
        return int(self.profile["chargingProfileId"])

    @property
    def purpose(self) -> str:
        return str(self.profile["chargingProfilePurpose"])

    @property
    def stack_level(self) -> int:
        return int(self.profile["stackLevel"])


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


class SmartCharging:
    def __init__(
        self, connectors: int, *, voltage: float, phases: int, max_profiles: int = 20
    ) -> None:
        self.connectors = connectors
        self.voltage = voltage
        self.phases = phases
        self.max_profiles = max_profiles
        self.profiles: list[InstalledProfile] = []

    # ------------------------------------------------------------ changes

    def install(
        self,
        connector_id: int,
        profile: dict[str, Any],
        *,
        transaction_id: int | None,
        now: datetime,
    ) -> str:
        """SetChargingProfile: ``transaction_id`` is the connector's active transaction."""
        purpose = profile["chargingProfilePurpose"]
        if connector_id < 0 or connector_id > self.connectors:
            return "Rejected"
        if purpose == CHARGE_POINT_MAX and connector_id != 0:
            return "Rejected"
        if purpose == TX:
            if connector_id == 0 or transaction_id is None:
                return "Rejected"
            wanted = profile.get("transactionId")
            if wanted is not None and wanted != transaction_id:
                return "Rejected"
        installed = InstalledProfile(connector_id, profile, now)
        # The same id, or the same purpose and stack level on the connector, is replaced.
        kept = [
            p
            for p in self.profiles
            if p.id != installed.id
            and not (
                p.connector_id == connector_id
                and p.purpose == purpose
                and p.stack_level == installed.stack_level
            )
        ]
        if len(kept) >= self.max_profiles:
            return "Rejected"
        kept.append(installed)
        self.profiles = kept
        return "Accepted"

    def clear(
        self,
        *,
        profile_id: int | None,
        connector_id: int | None,
        purpose: str | None,
        stack_level: int | None,
    ) -> str:
        """ClearChargingProfile: ``Accepted`` if any profile matched, else ``Unknown``."""

        def matches(p: InstalledProfile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        kept = [p for p in self.profiles if not matches(p)]
        removed = len(kept) != len(self.profiles)
        self.profiles = kept
        return "Accepted" if removed else "Unknown"

    def end_transaction(self, connector_id: int) -> None:
        """A TxProfile lives as long as its transaction."""
        self.profiles = [
            p for p in self.profiles if not (p.purpose == TX and p.connector_id == connector_id)
        ]

    # ------------------------------------------------------------- limits

    def limit_w(
        self,
        connector_id: int,
        now: datetime,
        *,
        transaction_start: datetime | None,
        sharing: int = 1,
    ) -> float | None:
        """The power limit of a connector now (None: no profile limits it)."""
        tx = self._purpose_limit(TX, (connector_id,), now, transaction_start)
        if tx is None:
            tx = self._purpose_limit(TX_DEFAULT, (connector_id,), now, transaction_start)
            if tx is None:
                tx = self._purpose_limit(TX_DEFAULT, (0,), now, transaction_start)
        station = self._purpose_limit(CHARGE_POINT_MAX, (0,), now, transaction_start)
        if station is not None:
            station /= max(sharing, 1)
        limits = [limit for limit in (tx, station) if limit is not None]
        return min(limits) if limits else None

    def _purpose_limit(
        self,
        purpose: str,
        connectors: tuple[int, ...],
        now: datetime,
        transaction_start: datetime | None,
    ) -> float | None:
        candidates = sorted(
            (p for p in self.profiles if p.purpose == purpose and p.connector_id in connectors),
            key=lambda p: p.stack_level,
            reverse=True,
        )
        for installed in candidates:
            limit = self._profile_limit(installed, now, transaction_start)
            if limit is not None:
                return limit
        return None

    def _schedule_start(
        self, installed: InstalledProfile, transaction_start: datetime | None
    ) -> datetime:
        profile = installed.profile
        if profile["chargingProfileKind"] == "Relative":
            return transaction_start or installed.installed_at
        start = _time(profile["chargingSchedule"].get("startSchedule"))
        return start or installed.installed_at

    def _profile_limit(
        self, installed: InstalledProfile, now: datetime, transaction_start: datetime | None
    ) -> float | None:
        profile = installed.profile
        valid_from = _time(profile.get("validFrom"))
        valid_to = _time(profile.get("validTo"))
        if (valid_from is not None and now < valid_from) or (
            valid_to is not None and now >= valid_to
        ):
            return None
        schedule = profile["chargingSchedule"]
        elapsed = (now - self._schedule_start(installed, transaction_start)).total_seconds()
        if profile["chargingProfileKind"] == "Recurring":
            elapsed %= RECURRENCE.get(profile.get("recurrencyKind", "Daily"), 86_400.0)
        if elapsed < 0:
            return None
        duration = schedule.get("duration")
        if duration is not None and elapsed >= duration:
            return None
        current: dict[str, Any] | None = None
        for period in sorted(schedule["chargingSchedulePeriod"], key=lambda p: p["startPeriod"]):
            if period["startPeriod"] <= elapsed:
                current = period
        if current is None:
            return None
        return self.to_watts(
            float(current["limit"]),
            schedule["chargingRateUnit"],
            current.get("numberPhases", self.phases),
        )

    def to_watts(self, limit: float, unit: str, phases: int | None = None) -> float:
        if unit == "W":
            return limit
        return limit * self.voltage * (phases or self.phases)

    def from_watts(self, watts: float, unit: str) -> float:
        if unit == "W":
            return watts
        return watts / (self.voltage * self.phases)

    # ------------------------------------------------------ composite schedule

    def composite(
        self,
        connector_id: int,
        duration: int,
        unit: str,
        now: datetime,
        *,
        transaction_start: datetime | None,
        default_w: float,
    ) -> list[dict[str, Any]]:
        """GetCompositeSchedule periods from ``now`` for ``duration`` seconds."""
        end = now + timedelta(seconds=max(duration, 0))
        moments = {now}
        for installed in self.profiles:
            moments.update(self._breakpoints(installed, now, end, transaction_start))
        periods: list[dict[str, Any]] = []
        for moment in sorted(moments):
            if moment >= end and moment != now:
                continue
            if connector_id == 0:
                limit = self._purpose_limit(CHARGE_POINT_MAX, (0,), moment, transaction_start)
            else:
                limit = self.limit_w(connector_id, moment, transaction_start=transaction_start)
            value = round(self.from_watts(default_w if limit is None else limit, unit), 1)
            if periods and periods[-1]["limit"] == value:
                continue
            periods.append({"startPeriod": int((moment - now).total_seconds()), "limit": value})
        return periods

    def _breakpoints(
        self,
        installed: InstalledProfile,
        now: datetime,
        end: datetime,
        transaction_start: datetime | None,
    ) -> set[datetime]:
        profile = installed.profile
        schedule = profile["chargingSchedule"]
        start = self._schedule_start(installed, transaction_start)
        offsets = [float(p["startPeriod"]) for p in schedule["chargingSchedulePeriod"]]
        if schedule.get("duration") is not None:
            offsets.append(float(schedule["duration"]))
        points: set[datetime] = set()
        recurrence = (
            RECURRENCE.get(profile.get("recurrencyKind", "Daily"), 86_400.0)
            if profile["chargingProfileKind"] == "Recurring"
            else None
        )
        if recurrence is None:
            points.update(start + timedelta(seconds=offset) for offset in offsets)
        else:
            cycles = int((now - start).total_seconds() // recurrence)
            span = int((end - now).total_seconds() // recurrence) + 2
            for cycle in range(cycles, cycles + span):
                base = start + timedelta(seconds=cycle * recurrence)
                points.update(base + timedelta(seconds=offset) for offset in offsets)
        for edge in (_time(profile.get("validFrom")), _time(profile.get("validTo"))):
            if edge is not None:
                points.add(edge)
        # Whole seconds from now (startPeriod is an integer).
        return {
            now + timedelta(seconds=int((point - now).total_seconds()))
            for point in points
            if now < point < end
        }
