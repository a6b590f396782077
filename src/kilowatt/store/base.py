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

from kilowatt.domain.configuration import (
    ChangeRecord,
    ConfigurationTemplate,
    ReportedKey,
    SyncState,
)
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
    "ConfigurationRepository",
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
        """Set last_seen_at of many charge points at once. A store with row locks
        (PostgreSQL) skips the rows another transaction holds: last-seen times are
        best effort, written again at the next flush."""
        ...

    def mark_all_disconnected(self, now: datetime) -> None: ...

    # Cluster (kilowatt.cluster.node): connection state reconciled with presence.
    def list_connected(self) -> list[tuple[str, datetime | None]]:
        """Id and ``connected_since`` of every charge point marked connected."""
        ...

    def clear_connection(
        self, charge_point_id: str, *, connected_since: datetime | None, now: datetime
    ) -> bool:
        """Mark it disconnected if it is still connected since ``connected_since``."""
        ...

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

    def get_with_active_count(self, id_tag: str) -> tuple[IdTag | None, int]:
        """The tag and its number of active transactions, in one query (authorization)."""
        ...

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

    def find_for_start(
        self,
        charge_point_id: str,
        connector_id: int,
        id_tag: str,
        started_at: datetime,
        meter_start: int,
    ) -> tuple[Transaction | None, list[Transaction]]:
        """:meth:`find_started` and :meth:`list_active` of the connector, in one query."""
        ...

    def count_active_for_tag(self, id_tag: str) -> int: ...

    def lock_for_start(self, charge_point_id: str, id_tag: str) -> None:
        """Hold the charge point's and the id tag's rows until the unit of work ends.

        Serializes the rules of StartTransaction (one active transaction per
        connector, the tag's concurrent transactions) across processes: a no-op on
        SQLite, which has one writer at a time anyway.
        """
        ...

    def count_active(self) -> int:
        """Active transactions of every charge point (metrics)."""
        ...

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
    def add_many(self, samples: Sequence[MeterSample], received_at: datetime) -> None:
        """Insert samples, skipping those stored already.

        Nothing is returned: the store may insert the samples of many units of work
        at once, just before their commit (see ``SqlRepositories``).
        """
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


class ConfigurationRepository(Protocol):
    """Charge point configuration (:mod:`kilowatt.domain.configuration`)."""

    def list_reported(self, charge_point_id: str) -> list[ReportedKey]: ...

    def record_report(
        self,
        charge_point_id: str,
        keys: Sequence[ReportedKey],
        unknown: Sequence[str],
        now: datetime,
        *,
        complete: bool,
    ) -> None:
        """Store a GetConfiguration answer. ``complete`` (all keys were asked for):
        keys it no longer lists are forgotten, and the charge point counts as synced."""
        ...

    def set_reported_value(self, charge_point_id: str, key: str, value: str, now: datetime) -> None:
        """The charge point accepted ``value`` for ``key`` (ChangeConfiguration)."""
        ...

    def get_sync(self, charge_point_id: str) -> SyncState | None: ...

    def set_sync_error(self, charge_point_id: str, error: str, now: datetime) -> None: ...

    def list_desired(self, charge_point_id: str) -> dict[str, str]: ...

    def set_desired(self, charge_point_id: str, key: str, value: str, now: datetime) -> None: ...

    def remove_desired(self, charge_point_id: str, key: str) -> bool: ...

    def add_template(self, name: str, description: str | None, now: datetime) -> None:
        """Raises AlreadyExists."""
        ...

    def get_template(self, name: str) -> ConfigurationTemplate | None: ...

    def template_values(self, name: str) -> dict[str, str]:
        """The template's values alone (empty for no such template): what a charge
        point's desired configuration needs, without the template's member list."""
        ...

    def list_templates(self) -> list[ConfigurationTemplate]: ...

    def remove_template(self, name: str) -> bool: ...

    def set_template_value(self, name: str, key: str, value: str, now: datetime) -> bool:
        """False when there is no such template."""
        ...

    def remove_template_value(self, name: str, key: str) -> bool: ...

    def assign_template(self, charge_point_id: str, name: str | None, now: datetime) -> None:
        """Make ``name`` the charge point's template (None: no template)."""
        ...

    def template_of(self, charge_point_id: str) -> str | None: ...

    def add_change(self, change: ChangeRecord) -> int: ...

    def list_changes(
        self, charge_point_id: str, *, key: str | None = None, limit: int = 100
    ) -> list[ChangeRecord]:
        """Newest first."""
        ...

    def latest_changes(self, charge_point_id: str) -> list[ChangeRecord]:
        """The last change of every key, by key."""
        ...


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

    @property
    def configuration(self) -> ConfigurationRepository: ...


class Store(Protocol):
    async def write(self, work: Callable[[Repositories], T]) -> T:
        """Run ``work`` atomically; return its result after the commit."""
        ...

    async def write_alone(self, work: Callable[[Repositories], T]) -> T:
        """:meth:`write` for a unit too large to share a commit (bulk imports)."""
        ...

    async def read(self, work: Callable[[Repositories], T]) -> T:
        """Run ``work`` on a consistent snapshot; nothing it writes is kept."""
        ...

    async def read_now(self, work: Callable[[Repositories], T]) -> T:
        """:meth:`read` for a few rows by key, on the OCPP hot path. ``work`` only
        reads: a store may run each of its statements on its own (the SQL store on
        PostgreSQL does), with no transaction to undo a write."""
        ...

    async def close(self) -> None: ...
