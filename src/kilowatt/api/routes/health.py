"""Liveness and readiness, for load balancers and orchestrators (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from kilowatt.api.deps import Context

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is up")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="The process can serve: its database answers")
async def ready(ctx: Context) -> JSONResponse:
    try:
        await ctx.store.read(lambda repos: repos.charge_points.get("-"))
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": f"database: {type(exc).__name__}"},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})
