"""The hot-path SQL: parameters converted exactly as the column types convert them.

Rows written through ``exec_driver_sql`` are compared, filtered and read back
through SQLAlchemy Core, so the stored form must be the same on both paths.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import JSON, Dialect
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.pysqlite import dialect as pysqlite_dialect
from sqlalchemy.exc import StatementError

from kilowatt.store.sql import tables as t
from kilowatt.store.sql.hotpath import (
    METER_VALUE_PARAMS,
    MULTI_ROW_MAX,
    MultiRowInsert,
    UnnestInsert,
    hot_sql,
    json_text,
    per_dialect,
    postgresql_datetime,
    sqlite_datetime,
)
from kilowatt.store.sql.tables import UTCDateTime

SQLITE = pysqlite_dialect()
POSTGRESQL = asyncpg_dialect()

zones = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
aware = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=zones
) | st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def core_bind(dialect: Dialect, value: Any) -> Any:
    """What SQLAlchemy sends the driver for a UTCDateTime column."""
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    return processor(value)


@given(aware)
def test_sqlite_datetime_is_what_core_stores(value: datetime) -> None:
    assert sqlite_datetime(value) == core_bind(SQLITE, value)


@given(aware)
def test_postgresql_datetime_is_what_core_binds(value: datetime) -> None:
    converted = postgresql_datetime(value)
    expected = core_bind(POSTGRESQL, value)
    assert converted == expected
    assert converted is not None
    assert converted.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC),  # microsecond 0 is still written
        datetime(2025, 3, 14, 9, 26, 53, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 0, 30, tzinfo=timezone(timedelta(hours=2))),  # day before
        datetime(999, 1, 1, 12, tzinfo=UTC),  # four-digit year
    ],
)
def test_sqlite_datetime_edge_cases(value: datetime) -> None:
    text = sqlite_datetime(value)
    assert text == core_bind(SQLITE, value)
    assert text is not None
    assert len(text) == len("2025-03-14 09:26:53.000000")


def test_none_stays_none() -> None:
    assert sqlite_datetime(None) is None
    assert postgresql_datetime(None) is None


@pytest.mark.parametrize("convert", [sqlite_datetime, postgresql_datetime])
def test_naive_datetime_is_refused_like_core_does(convert: Any) -> None:
    naive = datetime(2025, 1, 1, 12)
    with pytest.raises(StatementError, match="naive datetime") as refused:
        convert(naive)
    assert isinstance(refused.value.orig, ValueError)


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRESQL], ids=["sqlite", "postgresql"])
def test_json_text_is_what_core_binds(dialect: Dialect) -> None:
    processor = JSON().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    for flags in [(), ("late",), ["abandoned", "stop-late", 'quote"d', "ünïcode"]]:
        assert json_text(flags) == processor(list(flags))


def test_statements_render_for_both_engines() -> None:
    sqlite = hot_sql(SQLITE)
    assert sqlite.insert_meter_values.endswith("ON CONFLICT DO NOTHING")
    assert "RETURNING" not in sqlite.insert_meter_values
    assert "RETURNING" not in sqlite.insert_status
    assert "RETURNING" not in sqlite.insert_transaction  # the cursor's lastrowid is the id
    assert not sqlite.returning_id
    assert "ON CONFLICT (charge_point_id, connector_id) DO UPDATE" in sqlite.upsert_connector
    assert sqlite.insert_status.count("?") == 9

    postgresql = hot_sql(POSTGRESQL)
    # asyncpg takes numbered placeholders; SQLAlchemy adds the type casts it renders.
    assert "$13::TIMESTAMP WITH TIME ZONE" in postgresql.insert_meter_values
    assert "RETURNING" not in postgresql.insert_meter_values
    assert "RETURNING" not in postgresql.insert_status
    assert postgresql.insert_transaction.endswith("RETURNING transactions.id")
    assert postgresql.returning_id
    assert "$7::JSON" in postgresql.stop_transaction
    assert postgresql.stop_transaction.endswith("WHERE transactions.id = $9::INTEGER")
    assert hot_sql(POSTGRESQL) is postgresql  # rendered once per dialect


def test_multi_row_insert_covers_every_row_in_order_with_few_statement_texts() -> None:
    many = MultiRowInsert("INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING")
    rows = [(n, f"v{n}") for n in range(150)]

    statements = list(many.statements(rows))

    sizes = [sql.count("(?, ?)") for sql, _ in statements]
    assert sizes == [64, 64, 16, 4, 2]  # powers of two, largest first
    assert all(sql.endswith(" ON CONFLICT DO NOTHING") for sql, _ in statements)
    assert [value for _, parameters in statements for value in parameters] == [
        value for row in rows for value in row
    ]
    pairs = zip(statements, sizes, strict=True)
    assert all(len(parameters) == 2 * size for (_, parameters), size in pairs)
    # Every row count is made of the same few texts: the driver's statement cache
    # holds them all.
    texts = {sql for count in range(1, 300) for sql, _ in many.statements(rows[:1] * count)}
    assert len(texts) <= MULTI_ROW_MAX.bit_length()
    assert list(many.statements([])) == []


def test_multi_row_insert_refuses_what_it_cannot_repeat() -> None:
    with pytest.raises(ValueError, match="single-row INSERT"):
        MultiRowInsert("UPDATE t SET a = ? WHERE b = ?")
    with pytest.raises(ValueError, match="single-row INSERT"):
        MultiRowInsert("INSERT INTO t (a, b) VALUES ($1, $2)")


def test_sqlite_appends_are_multi_row_postgresql_appends_unnest_arrays() -> None:
    sqlite, postgresql = hot_sql(SQLITE), hot_sql(POSTGRESQL)
    assert isinstance(sqlite.meter_values_many, MultiRowInsert)
    assert isinstance(sqlite.status_many, MultiRowInsert)
    assert isinstance(postgresql.meter_values_many, UnnestInsert)
    assert isinstance(postgresql.status_many, UnnestInsert)
    # The meter values keep the single-row INSERT's ON CONFLICT DO NOTHING
    # (a retransmitted MeterValues adds nothing).
    assert postgresql.meter_values_many.sql.endswith(" ON CONFLICT DO NOTHING")
    assert "ON CONFLICT" not in postgresql.status_many.sql


def test_unnest_insert_sends_one_array_per_column_cast_to_the_column_type() -> None:
    many = UnnestInsert(t.meter_values, METER_VALUE_PARAMS, POSTGRESQL, " ON CONFLICT DO NOTHING")
    rows = [(f"CP-{n}", n, None, *range(10)) for n in range(3)]

    (statement,) = many.statements(rows)

    sql, parameters = statement
    assert sql.startswith(f"INSERT INTO meter_values ({', '.join(METER_VALUE_PARAMS)}) ")
    # Cast without the length (an explicit cast to VARCHAR(48) would cut a longer id).
    assert "unnest($1::VARCHAR[], $2::INTEGER[], $3::INTEGER[], " in sql
    assert "$4::TIMESTAMP WITH TIME ZONE[]" in sql and "$12::FLOAT[]" in sql
    assert sql.count("[]") == len(METER_VALUE_PARAMS)
    assert parameters[:3] == (("CP-0", "CP-1", "CP-2"), (0, 1, 2), (None, None, None))
    assert [list(row) for row in zip(*parameters, strict=True)] == [list(row) for row in rows]
    assert list(many.statements([])) == []
    with pytest.raises(ValueError, match="shorter"):
        list(many.statements([("CP-1", 1), ("CP-2",)]))


def test_unnest_insert_is_postgresql_only() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        UnnestInsert(t.meter_values, METER_VALUE_PARAMS, SQLITE)


def test_per_dialect_builds_once_for_each_dialect_object() -> None:
    built: list[object] = []

    @per_dialect
    def thing(dialect: Dialect) -> object:
        built.append(dialect)
        return object()

    first, second = pysqlite_dialect(), pysqlite_dialect()  # two engines' dialects
    assert thing(first) is thing(first)
    assert thing(second) is not thing(first)
    assert built == [first, second]
