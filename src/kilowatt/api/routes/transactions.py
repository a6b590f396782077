"""Transactions: list with filters, show with meter values, export as CSV, unknown stops."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from kilowatt.api.deps import Context, Reader
from kilowatt.api.errors import ApiError
from kilowatt.api.schemas_common import MAX_INT32, UtcDateTime, storable
from kilowatt.api.schemas_transactions import (
    TransactionDetail,
    TransactionPage,
    TransactionPublic,
    UnknownStopPublic,
)
from kilowatt.domain.models import Transaction, TransactionState
from kilowatt.domain.timestamps import utc_text

__all__ = ["CSV_COLUMNS", "router"]

router = APIRouter(prefix="/api/v1/transactions", tags=["transactions"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
EXPORT_PAGE = 1000

CSV_COLUMNS = (
    "id",
    "charge_point_id",
    "connector_id",
    "id_tag",
    "start_status",
    "state",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_wh",
    "energy_kwh",
    "stop_reason",
    "stop_id_tag",
    "reservation_id",
    "flags",
)


@dataclass(frozen=True, slots=True)
class Filters:
    charge_point_id: str | None
    id_tag: str | None
    state: TransactionState | None
    since: datetime | None
    until: datetime | None


def _filters(
    charge_point_id: Annotated[
        str | None,
        Query(min_length=1, max_length=48, description="Only this charge point's"),
        AfterValidator(storable),
    ] = None,
    id_tag: Annotated[
        str | None,
        Query(min_length=1, max_length=20, description="Only those started with this id tag"),
        AfterValidator(storable),
    ] = None,
    state: Annotated[TransactionState | None, Query(description="Only in this state")] = None,
    since: Annotated[
        UtcDateTime | None,
        Query(description="Started at or after this time (ISO 8601 with a time zone)"),
    ] = None,
    until: Annotated[
        UtcDateTime | None,
        Query(description="Started before this time (ISO 8601 with a time zone)"),
    ] = None,
) -> Filters:
    if since is not None and until is not None and since >= until:
        raise ApiError(
            422,
            "validation_error",
            "invalid request: query.until: must be later than since",
            {"fields": [{"field": "query.until", "reason": "must be later than since"}]},
        )
    return Filters(charge_point_id, id_tag, state, since, until)


TransactionFilters = Annotated[Filters, Depends(_filters)]


@router.get(
    "",
    summary="List transactions, newest first",
    description="Filters combine (AND). Pages of at most `limit` transactions; "
    "`next_offset` is the `offset` of the next page, null on the last one.",
)
async def list_transactions(
    ctx: Context,
    token: Reader,
    filters: TransactionFilters,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> TransactionPage:
    # One more than asked for tells whether there is a next page, without a count.
    transactions = await ctx.transactions.list_transactions(
        charge_point_id=filters.charge_point_id,
        id_tag=filters.id_tag,
        state=filters.state,
        since=filters.since,
        until=filters.until,
        limit=limit + 1,
        offset=offset,
    )
    more = len(transactions) > limit
    return TransactionPage(
        items=[TransactionPublic.of(transaction) for transaction in transactions[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get(
    "/export",
    summary="Export transactions as CSV, newest first",
    description="Every transaction that matches the filters (the same as for the list), "
    f"as CSV with the header line `{','.join(CSV_COLUMNS)}`. Times are UTC (ISO 8601), "
    "energies in Wh and kWh, flags separated by ';'.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def export_csv(ctx: Context, token: Reader, filters: TransactionFilters) -> StreamingResponse:
    async def page(offset: int) -> list[Transaction]:
        return await ctx.transactions.list_transactions(
            charge_point_id=filters.charge_point_id,
            id_tag=filters.id_tag,
            state=filters.state,
            since=filters.since,
            until=filters.until,
            limit=EXPORT_PAGE,
            offset=offset,
        )

    # The first page is read before the answer starts, so that an error is still an
    # error status rather than a truncated file.
    first = await page(0)

    async def lines() -> AsyncIterator[str]:
        yield _csv_lines([CSV_COLUMNS])
        offset, rows = 0, first
        oldest: int | None = None
        while True:
            # Transactions started meanwhile push older ones to later pages: skip
            # what was written already (ids only grow), so none is written twice.
            fresh = [t for t in rows if oldest is None or t.id < oldest]
            if fresh:
                oldest = fresh[-1].id
                yield _csv_lines(_csv_row(transaction) for transaction in fresh)
            if len(rows) < EXPORT_PAGE:
                return
            offset += EXPORT_PAGE
            rows = await page(offset)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="transactions.csv"'},
    )


@router.get(
    "/unknown-stops",
    summary="StopTransaction messages for transactions we do not know, newest first",
    description="A StopTransaction whose transactionId was not known (or belonged to "
    "another charge point) is answered and kept here for review.",
)
async def unknown_stops(
    ctx: Context,
    token: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> list[UnknownStopPublic]:
    stops = await ctx.transactions.list_unknown_stops(limit=limit)
    return [UnknownStopPublic.of(stop) for stop in stops]


@router.get("/{transaction_id}", summary="Show a transaction with its meter values")
async def show(
    ctx: Context,
    token: Reader,
    transaction_id: Annotated[int, Path(ge=1, le=MAX_INT32)],
) -> TransactionDetail:
    transaction = await ctx.transactions.get(transaction_id)
    if transaction is None:
        raise ApiError(
            404,
            "not_found",
            f"transaction {transaction_id} does not exist; a StopTransaction for an unknown "
            "id is listed by GET /api/v1/transactions/unknown-stops",
        )
    return TransactionDetail.of_detail(transaction)


# ------------------------------------------------------------------------ CSV


def _csv_lines(rows: Iterable[Iterable[object]]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _time(value: datetime | None) -> str:
    return utc_text(value) or ""


def _csv_row(transaction: Transaction) -> tuple[object, ...]:
    energy = transaction.energy_wh
    return (
        transaction.id,
        transaction.charge_point_id,
        transaction.connector_id,
        transaction.id_tag,
        transaction.start_status.value,
        transaction.state.value,
        _time(transaction.started_at),
        _time(transaction.stopped_at),
        transaction.meter_start,
        "" if transaction.meter_stop is None else transaction.meter_stop,
        "" if energy is None else energy,
        "" if energy is None else f"{Decimal(energy) / 1000:.3f}",
        transaction.stop_reason or "",
        transaction.stop_id_tag or "",
        "" if transaction.reservation_id is None else transaction.reservation_id,
        ";".join(transaction.flags),
    )
