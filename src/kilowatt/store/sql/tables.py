"""The relational schema (SQLAlchemy Core). Migrations in ``migrations/`` create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "api_tokens",
    "charge_points",
    "configuration_changes",
    "configuration_desired",
    "configuration_reported",
    "configuration_sync",
    "configuration_template_members",
    "configuration_template_values",
    "configuration_templates",
    "connectors",
    "id_tags",
    "message_log",
    "metadata",
    "meter_values",
    "status_history",
    "transactions",
    "unknown_stops",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every engine (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Identifiers: OCPP ids are at most 48 (charge point), 20 (idTag, CiString20).
CP_ID = String(48)
ID_TAG = String(20)

charge_points = Table(
    "charge_points",
    metadata,
    Column("id", CP_ID, primary_key=True),
    Column("registration", String(16), nullable=False),
    Column("description", Text),
    Column("security_profile", Integer),
    Column("password_hash", String(200)),
    Column("vendor", String(20)),
    Column("model", String(20)),
    Column("serial_number", String(25)),
    Column("charge_box_serial_number", String(25)),
    Column("firmware_version", String(50)),
    Column("iccid", String(20)),
    Column("imsi", String(20)),
    Column("meter_type", String(25)),
    Column("meter_serial_number", String(25)),
    Column("last_boot_at", UTCDateTime),
    Column("last_seen_at", UTCDateTime),
    Column("connected", Boolean, nullable=False, default=False),
    Column("connected_since", UTCDateTime),
    Column("remote_address", String(100)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

connectors = Table(
    "connectors",
    metadata,
    Column(
        "charge_point_id",
        CP_ID,
        ForeignKey("charge_points.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("connector_id", Integer, primary_key=True),
    Column("status", String(20), nullable=False),
    Column("error_code", String(30), nullable=False),
    Column("info", String(50)),
    Column("vendor_id", String(255)),
    Column("vendor_error_code", String(50)),
    Column("status_timestamp", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

status_history = Table(
    "status_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("charge_point_id", CP_ID, nullable=False),
    Column("connector_id", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("error_code", String(30), nullable=False),
    Column("info", String(50)),
    Column("vendor_id", String(255)),
    Column("vendor_error_code", String(50)),
    Column("timestamp", UTCDateTime),
    Column("received_at", UTCDateTime, nullable=False),
    Index(None, "charge_point_id", "connector_id", "received_at"),
)

id_tags = Table(
    "id_tags",
    metadata,
    Column("id_tag", ID_TAG, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("expiry_date", UTCDateTime),
    Column("parent_id_tag", ID_TAG),
    Column("owner", String(200)),
    Column("note", Text),
    Column("max_concurrent_transactions", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

transactions = Table(
    "transactions",
    metadata,
    # The transactionId answered to charge points: durable, unique, never reused
    # (AUTOINCREMENT on SQLite, an identity sequence on PostgreSQL).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("charge_point_id", CP_ID, nullable=False),
    Column("connector_id", Integer, nullable=False),
    Column("id_tag", ID_TAG, nullable=False),
    Column("meter_start", BigInteger, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("reservation_id", Integer),
    Column("start_status", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("meter_stop", BigInteger),
    Column("stopped_at", UTCDateTime),
    Column("stop_reason", String(100)),
    Column("stop_id_tag", ID_TAG),
    Column("energy_wh", BigInteger),
    Column("flags", JSON, nullable=False, default=list),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # A retransmitted StartTransaction finds its transaction by these (OCPP-J §4.1.1
    # retries): the same charge point, connector, idTag, timestamp and meterStart.
    UniqueConstraint(
        "charge_point_id",
        "connector_id",
        "id_tag",
        "started_at",
        "meter_start",
        name="uq_transactions_start",
    ),
    Index(None, "charge_point_id", "connector_id", "state"),
    Index(None, "id_tag", "state"),
    Index(None, "started_at"),
    sqlite_autoincrement=True,
)

meter_values = Table(
    "meter_values",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("charge_point_id", CP_ID, nullable=False),
    Column("connector_id", Integer, nullable=False),
    # As reported; not a foreign key: a charge point may name a transaction we
    # never saw start, and its samples are still kept.
    Column("transaction_id", Integer),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("measurand", String(40), nullable=False),
    Column("phase", String(8), nullable=False),  # "" when not given
    Column("unit", String(16), nullable=False),
    Column("context", String(24), nullable=False),
    Column("location", String(8), nullable=False),
    Column("format", String(12), nullable=False),
    Column("raw_value", Text, nullable=False),
    Column("value", Float),
    Column("received_at", UTCDateTime, nullable=False),
    Index(None, "transaction_id"),
)

# A retransmitted MeterValues (or transactionData) stores nothing twice. The
# transaction id may be NULL and NULLs never collide in a unique index, hence
# the coalesce (an expression index, on SQLite and PostgreSQL alike). The sample's
# time comes first (migration 0005): samples arrive in about the order of their
# time, so new index entries go to the end of the B-tree instead of one place per
# charge point all over it; an insert cost a third as much on SQLite.
Index(
    "uq_meter_values_sample",
    meter_values.c.timestamp,
    meter_values.c.charge_point_id,
    meter_values.c.connector_id,
    meter_values.c.measurand,
    meter_values.c.phase,
    meter_values.c.location,
    meter_values.c.context,
    func.coalesce(meter_values.c.transaction_id, -1),
    unique=True,
)

unknown_stops = Table(
    "unknown_stops",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("charge_point_id", CP_ID, nullable=False),
    Column("transaction_id", BigInteger, nullable=False),
    Column("id_tag", ID_TAG),
    Column("meter_stop", BigInteger, nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("reason", String(40)),
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint(
        "charge_point_id", "transaction_id", "timestamp", "meter_stop", name="uq_unknown_stops_stop"
    ),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# The message log: every OCPP frame in and out, for diagnostics, kept
# ``message_log_retention_days``. Rows arrive in batches from
# :mod:`kilowatt.services.message_log`; ids grow with time, which is what the
# newest-first listing and the retention purge rely on (no index on logged_at).
message_log = Table(
    "message_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("charge_point_id", CP_ID, nullable=False),
    Column("direction", String(3), nullable=False),  # "in" (from the charge point) or "out"
    Column("logged_at", UTCDateTime, nullable=False),
    Column("message_type", Integer),  # 2 CALL, 3 CALLRESULT, 4 CALLERROR; NULL: unparseable
    Column("unique_id", String(64)),
    Column("action", String(64)),  # for results too, from the CALL they answer
    Column("frame", Text, nullable=False),  # the raw text, cut at message_log_max_payload
    Column("size", Integer, nullable=False),  # bytes of the whole frame
    Column("truncated", Boolean, nullable=False),
    Index(None, "charge_point_id", "id"),
)

# ------------------------------------------------- charge point configuration
# OCPP 1.6 §9 configuration keys (kilowatt.domain.configuration): what each charge
# point last reported, what the operator wants it to have (its own values, on top
# of its template's), and every ChangeConfiguration sent with its answer.
# Key and value lengths as in the OCPP-J schemas (CiString50Type, CiString500Type).
CONFIG_KEY = String(50)
TEMPLATE_NAME = String(50)

configuration_reported = Table(
    "configuration_reported",
    metadata,
    Column(
        "charge_point_id",
        CP_ID,
        ForeignKey("charge_points.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", CONFIG_KEY, primary_key=True),
    Column("value", Text),  # never the value of a write-only key
    Column("readonly", Boolean),  # NULL for an unknown key
    Column("unknown", Boolean, nullable=False),  # answered in unknownKey
    Column("reported_at", UTCDateTime, nullable=False),
)

configuration_sync = Table(
    "configuration_sync",
    metadata,
    Column(
        "charge_point_id",
        CP_ID,
        ForeignKey("charge_points.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("synced_at", UTCDateTime),  # last complete GetConfiguration
    Column("error", Text),  # why the last GetConfiguration failed
    Column("error_at", UTCDateTime),
)

configuration_templates = Table(
    "configuration_templates",
    metadata,
    Column("name", TEMPLATE_NAME, primary_key=True),
    Column("description", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

configuration_template_values = Table(
    "configuration_template_values",
    metadata,
    Column(
        "template",
        TEMPLATE_NAME,
        ForeignKey("configuration_templates.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", CONFIG_KEY, primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

configuration_template_members = Table(
    "configuration_template_members",
    metadata,
    Column(
        "charge_point_id",
        CP_ID,
        ForeignKey("charge_points.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "template",
        TEMPLATE_NAME,
        ForeignKey("configuration_templates.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("assigned_at", UTCDateTime, nullable=False),
    Index(None, "template"),
)

configuration_desired = Table(
    "configuration_desired",
    metadata,
    Column(
        "charge_point_id",
        CP_ID,
        ForeignKey("charge_points.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", CONFIG_KEY, primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

configuration_changes = Table(
    "configuration_changes",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "charge_point_id",
        CP_ID,
        ForeignKey("charge_points.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key", CONFIG_KEY, nullable=False),
    Column("value", Text),  # NULL for a write-only key: only that it was set is kept
    Column("secret", Boolean, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("status", String(16)),  # ConfigurationStatus; NULL when there was no answer
    Column("error", Text),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime),
    Index(None, "charge_point_id", "key", "id"),
)

# Cluster: at most one active transaction per connector, whichever process records
# it (StartTransaction closes the previous one first, under a row lock, so this never
# trips in normal operation; it is the guarantee if anything else goes wrong).
Index(
    "uq_transactions_active_connector",
    transactions.c.charge_point_id,
    transactions.c.connector_id,
    unique=True,
    postgresql_where=transactions.c.state == "active",
    sqlite_where=transactions.c.state == "active",
)
