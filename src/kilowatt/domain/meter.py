"""Meter values: parse OCPP sampled values (strings on the wire) into samples.

OCPP 1.6 §7.43 SampledValue: every field but ``value`` is optional and the
specification gives the defaults applied here: context ``Sample.Periodic``, format
``Raw``, measurand ``Energy.Active.Import.Register``, location ``Outlet``, unit
``Wh``; phase has no default.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from kilowatt.domain.models import MeterSample
from kilowatt.domain.timestamps import parse_timestamp

__all__ = ["parse_meter_values", "parse_value"]


def parse_value(raw: str) -> Decimal | None:
    """The decimal a sampled value's text holds, or None (SignedData, garbage, NaN)."""
    try:
        value = Decimal(raw.strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def parse_meter_values(
    charge_point_id: str,
    connector_id: int,
    transaction_id: int | None,
    meter_values: Iterable[dict[str, Any]],
) -> list[MeterSample]:
    """Flatten schema-valid ``meterValue`` entries into samples, spec defaults applied."""
    samples: list[MeterSample] = []
    for meter_value in meter_values:
        timestamp: datetime = parse_timestamp(meter_value["timestamp"])
        for sampled in meter_value["sampledValue"]:
            raw = sampled["value"]
            samples.append(
                MeterSample(
                    charge_point_id=charge_point_id,
                    connector_id=connector_id,
                    transaction_id=transaction_id,
                    timestamp=timestamp,
                    raw_value=raw,
                    value=parse_value(raw),
                    measurand=sampled.get("measurand", "Energy.Active.Import.Register"),
                    unit=sampled.get("unit", "Wh"),
                    context=sampled.get("context", "Sample.Periodic"),
                    location=sampled.get("location", "Outlet"),
                    format=sampled.get("format", "Raw"),
                    phase=sampled.get("phase"),
                )
            )
    return samples
