"""``GET /api/v1/charge-points/{id}/messages``: the OCPP frames of a charge point.

Newest first; page with ``before_id`` (the smallest id of the previous page). The
log also holds the frames of charge points that are not registered (a rejected
BootNotification is often what one wants to see), so an unknown id is not a 404,
just an empty list. The last ``message_log_flush_interval`` seconds are not listed
yet: frames are written in batches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, BaseModel

from kilowatt.api.deps import Context, Reader
from kilowatt.api.errors import ApiError
from kilowatt.api.schemas_common import storable
from kilowatt.services.message_log import LoggedFrame

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/charge-points", tags=["message log"])

MAX_ID = 2**63 - 1  # the id column is a 64-bit integer


class LoggedFramePublic(BaseModel):
    id: int
    charge_point_id: str
    direction: Literal["in", "out"]
    time: datetime
    message_type: int | None
    unique_id: str | None
    action: str | None
    frame: str
    size: int
    truncated: bool

    @classmethod
    def of(cls, logged: LoggedFrame) -> LoggedFramePublic:
        return cls(
            id=logged.id,
            charge_point_id=logged.charge_point_id,
            direction="in" if logged.direction == "in" else "out",
            time=logged.logged_at,
            message_type=logged.message_type,
            unique_id=logged.unique_id,
            action=logged.action,
            frame=logged.frame,
            size=logged.size,
            truncated=logged.truncated,
        )


@router.get(
    "/{charge_point_id}/messages",
    summary="OCPP frames in and out of a charge point, newest first",
)
async def list_messages(
    ctx: Context,
    token: Reader,
    charge_point_id: Annotated[str, Path(min_length=1, max_length=48), AfterValidator(storable)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only frames older than this id")
    ] = None,
    direction: Annotated[
        Literal["in", "out"] | None, Query(description="in: from the charge point")
    ] = None,
    action: Annotated[
        str | None, Query(min_length=1, max_length=64), AfterValidator(storable)
    ] = None,
) -> list[LoggedFramePublic]:
    if ctx.message_log is None:
        raise ApiError(
            404,
            "not_found",
            "the message log is disabled: set message_log_enabled = true to record frames",
        )
    frames = await ctx.message_log.list_messages(
        charge_point_id, limit=limit, before_id=before_id, direction=direction, action=action
    )
    return [LoggedFramePublic.of(frame) for frame in frames]
