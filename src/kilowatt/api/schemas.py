"""API representations (separate from the tables and the domain records)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from kilowatt.domain.models import ChargePoint, Connector

__all__ = [
    "ChargePointCreate",
    "ChargePointPublic",
    "ChargePointUpdate",
    "ConnectorPublic",
    "PasswordUpdate",
    "SecurityProfileUpdate",
]


class ConnectorPublic(BaseModel):
    connector_id: int
    status: str
    error_code: str
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    status_timestamp: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, connector: Connector) -> ConnectorPublic:
        return cls(
            connector_id=connector.connector_id,
            status=connector.status,
            error_code=connector.error_code,
            info=connector.info,
            vendor_id=connector.vendor_id,
            vendor_error_code=connector.vendor_error_code,
            status_timestamp=connector.status_timestamp,
            updated_at=connector.updated_at,
        )


class ChargePointPublic(BaseModel):
    id: str
    registration: str
    description: str | None = None
    security_profile: int | None = None
    has_password: bool
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
    connected: bool
    connected_since: datetime | None = None
    remote_address: str | None = None
    created_at: datetime | None = None
    connectors: list[ConnectorPublic] = []

    @classmethod
    def of(cls, point: ChargePoint) -> ChargePointPublic:
        return cls(
            id=point.id,
            registration=point.registration.value,
            description=point.description,
            security_profile=point.security_profile,
            has_password=point.password_hash is not None,
            vendor=point.vendor,
            model=point.model,
            serial_number=point.serial_number,
            charge_box_serial_number=point.charge_box_serial_number,
            firmware_version=point.firmware_version,
            iccid=point.iccid,
            imsi=point.imsi,
            meter_type=point.meter_type,
            meter_serial_number=point.meter_serial_number,
            last_boot_at=point.last_boot_at,
            last_seen_at=point.last_seen_at,
            connected=point.connected,
            connected_since=point.connected_since,
            remote_address=point.remote_address,
            created_at=point.created_at,
            connectors=[ConnectorPublic.of(c) for c in point.connectors],
        )


class ChargePointCreate(BaseModel):
    # Printable, no "/" (the id is the last URL path segment), no leading space.
    id: str = Field(min_length=1, max_length=48, pattern=r"^[^\x00-\x20\x7f/][^\x00-\x1f\x7f/]*$")
    description: str | None = Field(None, max_length=500)
    password: str | None = Field(None, min_length=8, max_length=64)
    security_profile: int | None = Field(None, ge=0, le=3)
    registration: str = Field("Accepted", pattern="^(Accepted|Pending|Rejected)$")


class ChargePointUpdate(BaseModel):
    description: str | None = Field(None, max_length=500)
    registration: str | None = Field(None, pattern="^(Accepted|Pending|Rejected)$")


class PasswordUpdate(BaseModel):
    password: str = Field(min_length=8, max_length=64)


class SecurityProfileUpdate(BaseModel):
    security_profile: int | None = Field(ge=0, le=3)
