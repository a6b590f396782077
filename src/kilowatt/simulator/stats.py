"""Counters of one simulation (per process; summed over processes by the runner)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ERROR_KINDS", "SimulationStats"]

ERROR_KINDS = ("connect_failed", "disconnect", "callerror", "timeout", "protocol", "internal")
MAX_FIRST_ERRORS = 5


@dataclass
class SimulationStats:
    charge_points: int = 0
    connected: int = 0  # WebSocket connections open now
    charging: int = 0  # connectors in a transaction now
    boots: int = 0  # BootNotifications answered Accepted
    reboots: int = 0  # resets carried out
    reconnects: int = 0  # connections opened again after a loss
    sessions_started: int = 0  # StartTransaction answered
    sessions_completed: int = 0  # transactions stopped
    remote_starts: int = 0  # RemoteStartTransaction accepted
    rejected: int = 0  # id tags the Central System did not accept
    messages_sent: int = 0  # WebSocket messages: our CALLs and our answers
    messages_received: int = 0
    calls_sent: dict[str, int] = field(default_factory=dict)  # our CALLs by action
    calls_answered: dict[str, int] = field(default_factory=dict)  # its CALLs by action
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    first_errors: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if detail and len(self.first_errors) < MAX_FIRST_ERRORS:
            self.first_errors.append(f"{kind}: {detail}")

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def combine(cls, snapshots: list[dict[str, Any]]) -> SimulationStats:
        """The sum of several processes' snapshots."""
        total = cls()
        for snapshot in snapshots:
            for name, value in snapshot.items():
                current = getattr(total, name)
                if isinstance(value, dict):
                    for key, count in value.items():
                        current[key] = current.get(key, 0) + count
                elif isinstance(value, list):
                    room = MAX_FIRST_ERRORS - len(current)
                    current.extend(value[: max(room, 0)])
                else:
                    setattr(total, name, current + value)
        return total
