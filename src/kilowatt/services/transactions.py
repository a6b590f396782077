"""Transactions and meter values: the records a charging network bills from.

Every answer to StartTransaction, StopTransaction and MeterValues is given only
after the unit of work that stored the message has committed, and each of them is
idempotent: a charge point that retransmits (it never saw our answer) gets the same
answer and stores nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kilowatt.clock import Clock
from kilowatt.domain.energy import EnergyLimits, assess_energy, timestamp_flags
from kilowatt.domain.meter import parse_meter_values
from kilowatt.domain.models import (
    IdTagInfo,
    MeterSample,
    Transaction,
    TransactionState,
    UnknownStop,
)
from kilowatt.services.authorization import authorize_in
from kilowatt.services.events import EventService
from kilowatt.store.base import Repositories, Store

__all__ = ["StartResult", "StopRequest", "TransactionService"]

log = logging.getLogger("kilowatt.transactions")

ABANDONED_REASON = "superseded by a new transaction on the same connector"


@dataclass(frozen=True, slots=True)
class StartResult:
    transaction_id: int
    id_tag_info: IdTagInfo
    duplicate: bool
    abandoned: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StopRequest:
    """A StopTransaction, decoded (OCPP 1.6 §6.49)."""

    transaction_id: int
    meter_stop: int
    timestamp: datetime
    id_tag: str | None = None
    reason: str | None = None
    transaction_data: Sequence[dict[str, Any]] = ()


class TransactionService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        limits: EnergyLimits | None = None,
        *,
        events: EventService | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._limits = limits or EnergyLimits()
        # Told after each commit (starts, stops, meter values); None: no events.
        self._events = events

    async def start(
        self,
        charge_point_id: str,
        *,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        timestamp: datetime,
        reservation_id: int | None = None,
    ) -> StartResult:
        """OCPP 1.6 §4.10 StartTransaction: record it, whatever the tag's status.

        The transaction is stored even when the tag is not accepted: the charge
        point may already have started charging (offline, or with
        StopTransactionOnInvalidId false) and will stop it itself (§5.16).
        """
        now = self._clock.now()
        limits = self._limits

        def work(repos: Repositories) -> tuple[StartResult, list[Transaction]]:
            # In a cluster, another node may run a start for the same charge point or
            # tag (a duplicate connection): these rules hold under row locks, and the
            # unique index on active transactions per connector backs them up.
            repos.transactions.lock_for_start(charge_point_id, id_tag)
            existing, active = repos.transactions.find_for_start(
                charge_point_id, connector_id, id_tag, timestamp, meter_start
            )
            if existing is not None:
                info = authorize_in(repos, id_tag, now)
                # The same answer as the first time: same id, same status.
                return StartResult(
                    existing.id,
                    IdTagInfo(existing.start_status, info.expiry_date, info.parent_id_tag),
                    duplicate=True,
                ), []
            abandoned = []
            zombies = []
            for zombie in active:
                # Its StopTransaction was lost: the connector cannot run two.
                repos.transactions.stop(
                    zombie.id,
                    state=TransactionState.ABANDONED,
                    meter_stop=None,
                    stopped_at=timestamp,
                    reason=ABANDONED_REASON,
                    stop_id_tag=None,
                    energy_wh=None,
                    flags=[*zombie.flags, "abandoned"],
                    now=now,
                )
                abandoned.append(zombie.id)
                zombies.append(zombie)
            info = authorize_in(repos, id_tag, now)
            transaction_id = repos.transactions.add(
                Transaction(
                    id=0,
                    charge_point_id=charge_point_id,
                    connector_id=connector_id,
                    id_tag=id_tag,
                    meter_start=meter_start,
                    started_at=timestamp,
                    start_status=info.status,
                    reservation_id=reservation_id,
                    flags=tuple(timestamp_flags(timestamp, now, limits)),
                ),
                now,
            )
            result = StartResult(transaction_id, info, duplicate=False, abandoned=tuple(abandoned))
            return result, zombies

        result, zombies = await self._store.write(work)
        if self._events is not None and not result.duplicate:
            for zombie in zombies:
                self._events.transaction_stopped(
                    charge_point_id,
                    transaction_id=zombie.id,
                    known=True,
                    state=TransactionState.ABANDONED.value,
                    connector_id=zombie.connector_id,
                    id_tag=zombie.id_tag,
                    stop_id_tag=None,
                    meter_start=zombie.meter_start,
                    meter_stop=None,
                    energy_wh=None,
                    reason=ABANDONED_REASON,
                    timestamp=timestamp,
                    flags=[*zombie.flags, "abandoned"],
                    time=now,
                )
            self._events.transaction_started(
                charge_point_id,
                transaction_id=result.transaction_id,
                connector_id=connector_id,
                id_tag=id_tag,
                id_tag_status=result.id_tag_info.status.value,
                meter_start=meter_start,
                timestamp=timestamp,
                reservation_id=reservation_id,
                time=now,
            )
        log.info(
            "transaction started" if not result.duplicate else "transaction start repeated",
            extra={
                "charge_point": charge_point_id,
                "transaction_id": result.transaction_id,
                "connector_id": connector_id,
                "id_tag_status": result.id_tag_info.status.value,
                "abandoned": list(result.abandoned),
            },
        )
        return result

    async def stop(self, charge_point_id: str, request: StopRequest) -> IdTagInfo | None:
        """OCPP 1.6 §4.11 StopTransaction: always answered, never a CALLERROR.

        A transactionId we do not know (or that belongs to another charge point) is
        kept for an operator; a retransmission changes nothing.
        """
        now = self._clock.now()
        limits = self._limits

        def work(repos: Repositories) -> tuple[IdTagInfo | None, bool, dict[str, Any] | None]:
            transaction = repos.transactions.get(request.transaction_id)
            samples: list[MeterSample] = []
            # What the transaction.stopped event says; None when nothing changed.
            stopped: dict[str, Any] | None = None
            if transaction is None or transaction.charge_point_id != charge_point_id:
                kept = repos.transactions.add_unknown_stop(
                    UnknownStop(
                        charge_point_id=charge_point_id,
                        transaction_id=request.transaction_id,
                        id_tag=request.id_tag,
                        meter_stop=request.meter_stop,
                        timestamp=request.timestamp,
                        reason=request.reason,
                        received_at=now,
                    )
                )
                connector_id = 0
                transaction_ref = None
                if kept:
                    stopped = {
                        "known": False,
                        "state": None,
                        "connector_id": None,
                        "id_tag": None,
                        "meter_start": None,
                        "energy_wh": None,
                        "flags": [],
                    }
            else:
                connector_id = transaction.connector_id
                transaction_ref = transaction.id
                repeated = (
                    transaction.state is TransactionState.COMPLETED
                    and transaction.meter_stop == request.meter_stop
                    and transaction.stopped_at == request.timestamp
                )
                if not repeated:
                    energy, flags = assess_energy(
                        transaction.meter_start,
                        request.meter_stop,
                        transaction.started_at,
                        request.timestamp,
                        limits,
                    )
                    flags = [
                        *transaction.flags,
                        *(f for f in flags if f not in transaction.flags),
                        *timestamp_flags(request.timestamp, now, limits),
                    ]
                    if transaction.state is TransactionState.COMPLETED:
                        flags.append("stopped_twice")
                    flags = list(dict.fromkeys(flags))
                    repos.transactions.stop(
                        transaction.id,
                        state=TransactionState.COMPLETED,
                        meter_stop=request.meter_stop,
                        stopped_at=request.timestamp,
                        reason=request.reason,
                        stop_id_tag=request.id_tag,
                        energy_wh=energy,
                        flags=flags,
                        now=now,
                    )
                    stopped = {
                        "known": True,
                        "state": TransactionState.COMPLETED.value,
                        "connector_id": transaction.connector_id,
                        "id_tag": transaction.id_tag,
                        "meter_start": transaction.meter_start,
                        "energy_wh": energy,
                        "flags": flags,
                    }
            if request.transaction_data:
                samples = parse_meter_values(
                    charge_point_id, connector_id, transaction_ref, request.transaction_data
                )
                repos.meter_values.add_many(samples, now)
            known = transaction_ref is not None
            if request.id_tag is None:
                return None, known, stopped
            return authorize_in(repos, request.id_tag, now), known, stopped

        info, known, stopped = await self._store.write(work)
        if self._events is not None and stopped is not None:
            self._events.transaction_stopped(
                charge_point_id,
                transaction_id=request.transaction_id,
                stop_id_tag=request.id_tag,
                meter_stop=request.meter_stop,
                reason=request.reason,
                timestamp=request.timestamp,
                time=now,
                **stopped,
            )
        log.log(
            logging.INFO if known else logging.WARNING,
            "transaction stopped" if known else "stop of an unknown transaction kept for review",
            extra={
                "charge_point": charge_point_id,
                "transaction_id": request.transaction_id,
                "meter_stop": request.meter_stop,
                "reason": request.reason,
            },
        )
        return info

    async def meter_values(
        self,
        charge_point_id: str,
        *,
        connector_id: int,
        transaction_id: int | None,
        meter_value: Sequence[dict[str, Any]],
    ) -> None:
        """OCPP 1.6 §4.7 MeterValues: every sample stored with its own timestamp."""
        samples = parse_meter_values(charge_point_id, connector_id, transaction_id, meter_value)
        now = self._clock.now()
        await self._store.write(lambda repos: repos.meter_values.add_many(samples, now))
        if self._events is not None:
            self._events.meter_values(
                charge_point_id,
                connector_id=connector_id,
                transaction_id=transaction_id,
                samples=samples,
                time=now,
            )

    # ----------------------------------------------------------- queries

    async def get(self, transaction_id: int, *, with_samples: bool = True) -> Transaction | None:
        def work(repos: Repositories) -> Transaction | None:
            transaction = repos.transactions.get(transaction_id)
            if transaction is not None and with_samples:
                transaction.samples = repos.meter_values.list_for_transaction(transaction_id)
            return transaction

        return await self._store.read(work)

    async def list_transactions(
        self,
        *,
        charge_point_id: str | None = None,
        id_tag: str | None = None,
        state: TransactionState | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Transaction]:
        return await self._store.read(
            lambda repos: repos.transactions.list_transactions(
                charge_point_id=charge_point_id,
                id_tag=id_tag,
                state=state,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )

    async def list_unknown_stops(self, *, limit: int = 100) -> list[UnknownStop]:
        return await self._store.read(
            lambda repos: repos.transactions.list_unknown_stops(limit=limit)
        )
