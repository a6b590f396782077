"""SQLite: the hot transaction lookups are prepared once, not at every execution."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection

from kilowatt.domain.models import TransactionState
from kilowatt.store.base import Repositories
from kilowatt.store.sql.database import SqlStore


def reads_then_statements(repos: Repositories) -> list[tuple[str, int, int]]:
    """Every transaction read of the OCPP hot path (and the API's state filter), five
    times with other values, then what SQLite says of this connection's statements."""
    for n in range(5):
        repos.id_tags.get_with_active_count(f"TAG-{n}")
        repos.transactions.find_for_start(
            f"CP-{n}", 1, f"TAG-{n}", datetime(2026, 1, 1, 0, n, tzinfo=UTC), n
        )
        repos.transactions.count_active_for_tag(f"TAG-{n}")
        repos.transactions.count_active()
        repos.transactions.list_active(charge_point_id=f"CP-{n}", connector_id=n)
        repos.transactions.list_transactions(
            charge_point_id=f"CP-{n}", state=TransactionState.ACTIVE
        )
    connection: Connection = repos.connection  # type: ignore[attr-defined]
    driver = connection.connection.dbapi_connection
    assert driver is not None
    try:
        rows = driver.execute("SELECT sql, reprep, run FROM sqlite_stmt").fetchall()
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no sqlite_stmt table (built without SQLITE_ENABLE_STMTVTAB)")
    return [(str(sql), int(reprep), int(run)) for sql, reprep, run in rows]


async def test_transaction_lookups_are_not_prepared_again_at_every_execution(
    sqlite_store: SqlStore,
) -> None:
    # A state bound as a parameter would take part in deciding whether the partial
    # index uq_transactions_active_connector (WHERE state = 'active') applies, and
    # SQLite would prepare the statement again at every execution to decide anew.
    statements = await sqlite_store.read(reads_then_statements)
    on_transactions = [row for row in statements if "FROM transactions" in row[0]]
    assert len(on_transactions) >= 6
    for sql, reprep, run in on_transactions:
        assert run >= 5, sql
        assert reprep == 0, f"prepared again {reprep} times in {run} runs: {sql}"
