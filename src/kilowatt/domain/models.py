"""Domain records: plain dataclasses, no ORM, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "ApiToken",
    "AuthorizationStatus",
    "BootInfo",
    "ChargePoint",
    "Connector",
    "IdTag",
    "IdTagInfo",
    "MeterSample",
    "Registration",
    "StatusRecord",
    "Transaction",
    "TransactionState",
    "UnknownStop",
]


class Registration(StrEnum):
    """Whether the Central System accepts a charge point (BootNotification status)."""

    ACCEPTED = "Accepted"
    PENDING = "Pending"
    REJECTED = "Rejected"


class AuthorizationStatus(StrEnum):
    """OCPP 1.6 §7.2 AuthorizationStatus."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"


class TransactionState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    # Closed by the Central System: a newer StartTransaction on the same connector
    # proved the StopTransaction was lost, or the charge point rebooted.
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class BootInfo:
    """What a BootNotification tells about a charge point (OCPP 1.6 §6.5)."""

    vendor: str
    model: str
    serial_number: str | None = None
    charge_box_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None


@dataclass(slots=True)
class ChargePoint:
    id: str
    registration: Registration = Registration.ACCEPTED
    description: str | None = None
    security_profile: int | None = None
    password_hash: str | None = None
    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    charge_box_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None
    last_boot_at: datetime | None = None
    last_seen_at: datetime | None = None
    connected: bool = False
    connected_since: datetime | None = None
    remote_address: str | None = None
    created_at: datetime | None = None
    connectors: list[Connector] = field(default_factory=list)


@dataclass(slots=True)
class Connector:
    charge_point_id: str
    connector_id: int
    status: str
    error_code: str
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    status_timestamp: datetime | None = None
    updated_at: datetime | None = None


# Not frozen, like MeterSample: one is built for every StatusNotification, and a
# frozen dataclass's __init__ (object.__setattr__ per field) costs six times a plain
# one's. Nothing changes them after they are built.
@dataclass(slots=True)
class StatusRecord:
    """One StatusNotification as received (history)."""

    charge_point_id: str
    connector_id: int
    status: str
    error_code: str
    info: str | None
    vendor_id: str | None
    vendor_error_code: str | None
    timestamp: datetime | None
    received_at: datetime


@dataclass(slots=True)
class IdTag:
    id_tag: str
    status: AuthorizationStatus = AuthorizationStatus.ACCEPTED
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None
    owner: str | None = None
    note: str | None = None
    max_concurrent_transactions: int = 1
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IdTagInfo:
    """OCPP 1.6 §7.11 IdTagInfo, as answered to a charge point."""

    status: AuthorizationStatus
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None


@dataclass(slots=True)
class Transaction:
    id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    meter_start: int
    started_at: datetime
    state: TransactionState = TransactionState.ACTIVE
    start_status: AuthorizationStatus = AuthorizationStatus.ACCEPTED
    reservation_id: int | None = None
    meter_stop: int | None = None
    stopped_at: datetime | None = None
    stop_reason: str | None = None
    stop_id_tag: str | None = None
    energy_wh: int | None = None
    flags: tuple[str, ...] = ()
    created_at: datetime | None = None
    samples: list[MeterSample] = field(default_factory=list)


# Not frozen: built for every sampled value of every MeterValues (three or more a
# message), and a frozen dataclass's __init__ (object.__setattr__ per field) took
# 1.4 µs of the 1.6 µs a sample cost to build. Nothing changes them after.
@dataclass(slots=True)
class MeterSample:
    """One sampledValue with its meterValue's timestamp (OCPP 1.6 §7.45).

    Optional fields carry the specification's defaults when the charge point
    omitted them; ``value`` is the parsed decimal, ``raw_value`` the text sent.
    """

    charge_point_id: str
    connector_id: int
    transaction_id: int | None
    timestamp: datetime
    raw_value: str
    value: Decimal | None
    measurand: str = "Energy.Active.Import.Register"
    unit: str = "Wh"
    context: str = "Sample.Periodic"
    location: str = "Outlet"
    format: str = "Raw"
    phase: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownStop:
    """A StopTransaction whose transactionId we do not know, kept for an operator."""

    charge_point_id: str
    transaction_id: int
    id_tag: str | None
    meter_stop: int
    timestamp: datetime
    reason: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token of the operator API (the secret itself is never stored)."""

    id: int
    name: str
    role: str  # "admin" | "read"
    created_at: datetime | None = None
    revoked_at: datetime | None = None
