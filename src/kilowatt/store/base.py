"""The storage interfaces services depend on.

A *unit of work* is a plain function that receives :class:`Repositories` and does
its reads and writes through them; :meth:`Store.write` runs it atomically and
returns its result once it is committed. Units of work are synchronous on purpose:
the store runs many of them in one database transaction (group commit), each
acknowledged only after that transaction commits, and may run one again on its own
if the group fails — so a unit of work must do nothing but database work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from kilowatt.domain.models import (
    ApiToken,
    BootInfo,
    ChargePoint,
    Connector,
    IdTag,
    MeterSample,
    StatusRecord,
    Transaction,
    TransactionState,
    UnknownStop,
)

__all__ = [
    "AlreadyExists",
    "ApiTokenRepository",
    "ChargePointRepository",
    "IdTagRepository",
    "MeterValueRepository",
    "Repositories",
    "Store",
    "StoreError",
    "TransactionRepository",
]

T = TypeVar("T")


class StoreError(Exception):
    """Base of the errors the store raises on purpose."""


class AlreadyExists(StoreError):
    """A record with that key exists already."""


class ChargePointRepository(Protocol):
    def get(self, charge_point_id: str) -> ChargePoint | None: ...

    def list_charge_points(self) -> list[ChargePoint]: ...

    def add(self, charge_point: ChargePoint, now: datetime) -> None: ...

    def update(self, charge_point_id: str, now: datetime, **fields: Any) -> bool: ...

    def remove(self, charge_point_id: str) -> bool: ...

    def record_boot(self, charge_point_id: str, boot: BootInfo, now: datetime) -> None: ...

    def set_connection(
        self, charge_point_id: str, *, connected: bool, now: datetime, remote_address: str | None
    ) -> None: ...

    def touch(self, seen: Sequence[tuple[str, datetime]]) -> None:
        """Set last_seen_at of many charge points at once."""
        ...

    def mark_all_disconnected(self, now: datetime) -> None: ...

    def get_connector(self, charge_point_id: str, connector_id: int) -> Connector | None: ...

    def list_connectors(self, charge_point_id: str) -> list[Connector]: ...

    def update_connector(self, connector: Connector) -> None:
        """Insert or replace the connector's current status."""
        ...

    def add_status(self, record: StatusRecord) -> None: ...

    def list_status_history(
        self, charge_point_id: str, *, connector_id: int | None = None, limit: int = 100
    ) -> list[StatusRecord]: ...


class IdTagRepository(Protocol):
    def get(self, id_tag: str) -> IdTag | None: ...

    def list_id_tags(self, *, limit: int = 1000, offset: int = 0) -> list[IdTag]: ...

    def add(self, tag: IdTag, now: datetime) -> None: ...

    def update(self, id_tag: str, now: datetime, **fields: Any) -> bool: ...

    def remove(self, id_tag: str) -> bool: ...


class TransactionRepository(Protocol):
    def get(self, transaction_id: int) -> Transaction | None: ...

    def find_started(
        self,
        charge_point_id: str,
        connector_id: int,
        id_tag: str,
        started_at: datetime,
        meter_start: int,
    ) -> Transaction | None:
        """The transaction a (retransmitted) StartTransaction created, if any."""
        ...

    def list_active(
        self, *, charge_point_id: str | None = None, connector_id: int | None = None
    ) -> list[Transaction]: ...

    def count_active_for_tag(self, id_tag: str) -> int: ...

    def add(self, transaction: Transaction, now: datetime) -> int:
        """Insert; return the new transaction id (``transaction.id`` is ignored)."""
        ...

    def stop(
        self,
        transaction_id: int,
        *,
        state: TransactionState,
        meter_stop: int | None,
        stopped_at: datetime,
        reason: str | None,
        stop_id_tag: str | None,
        energy_wh: int | None,
        flags: Sequence[str],
        now: datetime,
    ) -> None: ...

    def list_transactions(
        self,
        *,
        charge_point_id: str | None = None,
        id_tag: str | None = None,
        state: TransactionState | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Transaction]: ...

    def add_unknown_stop(self, stop: UnknownStop) -> bool:
        """Keep a StopTransaction for an unknown id; False if it was kept already."""
        ...

    def list_unknown_stops(self, *, limit: int = 100) -> list[UnknownStop]: ...


class MeterValueRepository(Protocol):
    def add_many(self, samples: Sequence[MeterSample], received_at: datetime) -> int:
        """Insert samples, skipping those stored already; return how many were new."""
        ...

    def list_for_transaction(self, transaction_id: int) -> list[MeterSample]: ...

    def list_for_charge_point(
        self, charge_point_id: str, *, limit: int = 100
    ) -> list[MeterSample]: ...


class ApiTokenRepository(Protocol):
    def add(self, name: str, token_hash: str, role: str, now: datetime) -> ApiToken: ...

    def get_by_hash(self, token_hash: str) -> ApiToken | None: ...

    def list_api_tokens(self) -> list[ApiToken]: ...

    def revoke(self, name: str, now: datetime) -> bool: ...


class Repositories(Protocol):
    """What a unit of work sees: one repository per aggregate, one transaction."""

    @property
    def charge_points(self) -> ChargePointRepository: ...

    @property
    def id_tags(self) -> IdTagRepository: ...

    @property
    def transactions(self) -> TransactionRepository: ...

    @property
    def meter_values(self) -> MeterValueRepository: ...

    @property
    def api_tokens(self) -> ApiTokenRepository: ...


class Store(Protocol):
    async def write(self, work: Callable[[Repositories], T]) -> T:
        """Run ``work`` atomically; return its result after the commit."""
        ...

    async def read(self, work: Callable[[Repositories], T]) -> T:
        """Run ``work`` on a consistent snapshot; nothing it writes is kept."""
        ...

    async def close(self) -> None: ...
