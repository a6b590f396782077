"""The operator API: ``create_api(context)`` builds the FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from kilowatt import __version__
from kilowatt.api.deps import ApiContext
from kilowatt.api.errors import install_error_handlers
from kilowatt.api.routes import (
    calls,
    charge_points,
    configuration,
    events,
    health,
    id_tags,
    message_log,
    status_history,
    transactions,
)

__all__ = ["create_api"]

DESCRIPTION = """\
Operate a Kilowatt Central System: charge points, id tags, transactions, and remote
control of charge points with every OCPP 1.6 CS→CP action.

Every `/api/v1` route needs `Authorization: Bearer <token>`; create tokens with
`kilowatt api-token create NAME [--role admin|read]`. Read-only tokens may only GET.
Errors always have the shape `{"error": {"code": "...", "message": "...", "details": {}}}`.
"""


def create_api(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Kilowatt",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.kilowatt = context
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(charge_points.router)
    app.include_router(calls.router)
    app.include_router(status_history.router)
    app.include_router(id_tags.router)
    app.include_router(transactions.router)
    app.include_router(message_log.router)
    app.include_router(events.router)
    configuration.install(app)
    for router in context.extras.get("routers", ()):
        app.include_router(router)
    return app
