"""``GET /metrics``: Prometheus metrics of this process (no token needed, like /health)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from kilowatt.metrics import CONTENT_TYPE, Metrics

__all__ = ["metrics_router"]


def metrics_router(metrics: Metrics) -> APIRouter:
    """The route serving ``metrics`` (the composition root includes it in the API)."""
    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics of this process (text exposition format)",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}}},
    )
    async def scrape() -> Response:
        return Response(await metrics.scrape(), media_type=CONTENT_TYPE)

    return router
