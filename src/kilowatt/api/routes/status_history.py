"""Connector status history of a charge point (every StatusNotification received)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from kilowatt.api.deps import Context, Reader
from kilowatt.api.errors import charge_point_not_found
from kilowatt.api.schemas_common import storable
from kilowatt.api.schemas_transactions import StatusRecordPublic
from kilowatt.domain.models import StatusRecord
from kilowatt.store.base import Repositories

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/charge-points", tags=["charge points"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@router.get(
    "/{charge_point_id}/status-history",
    summary="Connector status history, newest first",
    description="Every StatusNotification the charge point sent, as received; "
    "`connector_id` 0 is the charge point itself.",
)
async def status_history(
    ctx: Context,
    token: Reader,
    charge_point_id: Annotated[str, Path(min_length=1, max_length=48), AfterValidator(storable)],
    connector_id: Annotated[
        int | None, Query(ge=0, le=1000, description="Only this connector's")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> list[StatusRecordPublic]:
    def work(repos: Repositories) -> list[StatusRecord] | None:
        if repos.charge_points.get(charge_point_id) is None:
            return None
        return repos.charge_points.list_status_history(
            charge_point_id, connector_id=connector_id, limit=limit
        )

    records = await ctx.store.read(work)
    if records is None:
        raise charge_point_not_found(charge_point_id)
    return [StatusRecordPublic.of(record) for record in records]
