"""API representations of transactions, meter values, unknown stops, status history."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from kilowatt.domain.models import MeterSample, StatusRecord, Transaction, UnknownStop

__all__ = [
    "MeterValuePublic",
    "StatusRecordPublic",
    "TransactionDetail",
    "TransactionPage",
    "TransactionPublic",
    "UnknownStopPublic",
    "kwh",
]


def kwh(energy_wh: int | None) -> float | None:
    """Wh as kWh, to the Wh (3 decimals)."""
    if energy_wh is None:
        return None
    return float(Decimal(energy_wh) / 1000)


class TransactionPublic(BaseModel):
    id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    start_status: str = Field(description="The id tag's authorization status at the start")
    state: str = Field(description="active, completed or abandoned")
    started_at: datetime
    meter_start: int = Field(description="Wh")
    stopped_at: datetime | None = None
    meter_stop: int | None = Field(None, description="Wh")
    energy_wh: int | None = Field(None, description="meter_stop - meter_start, once stopped")
    energy_kwh: float | None = Field(None, description="energy_wh / 1000")
    stop_reason: str | None = None
    stop_id_tag: str | None = None
    reservation_id: int | None = None
    flags: list[str] = Field(
        description="Anomalies found in what the charge point reported "
        "(e.g. meter_decreased, abandoned, stopped_twice)"
    )
    created_at: datetime | None = None

    @classmethod
    def fields_of(cls, transaction: Transaction) -> dict[str, object]:
        return {
            "id": transaction.id,
            "charge_point_id": transaction.charge_point_id,
            "connector_id": transaction.connector_id,
            "id_tag": transaction.id_tag,
            "start_status": transaction.start_status.value,
            "state": transaction.state.value,
            "started_at": transaction.started_at,
            "meter_start": transaction.meter_start,
            "stopped_at": transaction.stopped_at,
            "meter_stop": transaction.meter_stop,
            "energy_wh": transaction.energy_wh,
            "energy_kwh": kwh(transaction.energy_wh),
            "stop_reason": transaction.stop_reason,
            "stop_id_tag": transaction.stop_id_tag,
            "reservation_id": transaction.reservation_id,
            "flags": list(transaction.flags),
            "created_at": transaction.created_at,
        }

    @classmethod
    def of(cls, transaction: Transaction) -> TransactionPublic:
        return cls.model_validate(cls.fields_of(transaction))


class MeterValuePublic(BaseModel):
    timestamp: datetime
    connector_id: int
    measurand: str
    phase: str | None = None
    location: str
    context: str
    format: str
    unit: str
    value: str | None = Field(
        description="The value as a decimal string (no digit lost), null when it is no number"
    )
    raw_value: str = Field(description="The value exactly as the charge point sent it")

    @classmethod
    def of(cls, sample: MeterSample) -> MeterValuePublic:
        return cls(
            timestamp=sample.timestamp,
            connector_id=sample.connector_id,
            measurand=sample.measurand,
            phase=sample.phase,
            location=sample.location,
            context=sample.context,
            format=sample.format,
            unit=sample.unit,
            value=str(sample.value) if sample.value is not None else None,
            raw_value=sample.raw_value,
        )


class TransactionDetail(TransactionPublic):
    meter_values: list[MeterValuePublic] = Field(description="Oldest first")

    @classmethod
    def of_detail(cls, transaction: Transaction) -> TransactionDetail:
        return cls.model_validate(
            {
                **cls.fields_of(transaction),
                "meter_values": [MeterValuePublic.of(sample) for sample in transaction.samples],
            }
        )


class TransactionPage(BaseModel):
    """One page of transactions, newest first."""

    items: list[TransactionPublic]
    limit: int
    offset: int
    next_offset: int | None = Field(
        description="The offset of the next page, or null when this is the last one"
    )


class UnknownStopPublic(BaseModel):
    """A StopTransaction whose transactionId was not known, kept for review."""

    charge_point_id: str
    transaction_id: int
    id_tag: str | None = None
    meter_stop: int = Field(description="Wh")
    timestamp: datetime
    reason: str | None = None
    received_at: datetime

    @classmethod
    def of(cls, stop: UnknownStop) -> UnknownStopPublic:
        return cls(
            charge_point_id=stop.charge_point_id,
            transaction_id=stop.transaction_id,
            id_tag=stop.id_tag,
            meter_stop=stop.meter_stop,
            timestamp=stop.timestamp,
            reason=stop.reason,
            received_at=stop.received_at,
        )


class StatusRecordPublic(BaseModel):
    """One StatusNotification as received."""

    connector_id: int
    status: str
    error_code: str
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    timestamp: datetime | None = Field(None, description="When the charge point says it happened")
    received_at: datetime

    @classmethod
    def of(cls, record: StatusRecord) -> StatusRecordPublic:
        return cls(
            connector_id=record.connector_id,
            status=record.status,
            error_code=record.error_code,
            info=record.info,
            vendor_id=record.vendor_id,
            vendor_error_code=record.vendor_error_code,
            timestamp=record.timestamp,
            received_at=record.received_at,
        )
