"""One error shape for the whole API: ``{"error": {"code", "message", "details"}}``.

``code`` is a stable machine-readable word (``not_found``, ``validation_error``,
``not_connected``, ``call_error``, ``timeout`` …); ``message`` says what happened and,
where it can, what to do; ``details`` carries structured facts (which field and why;
the charge point's CALLERROR code, description and details).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kilowatt.protocol.errors import (
    CallErrorReceived,
    CallTimeout,
    NotConnected,
    OutgoingValidationError,
)
from kilowatt.protocol.session import InvalidCallResult
from kilowatt.services.commands import InvalidPayload, UnknownAction, UnknownChargePoint
from kilowatt.store.base import AlreadyExists

__all__ = ["ApiError", "charge_point_not_found", "error_body", "install_error_handlers"]


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def charge_point_not_found(charge_point_id: str) -> ApiError:
    """404 for a charge point nobody registered (with how to register it)."""
    return ApiError(
        404,
        "not_found",
        f"charge point {charge_point_id!r} is not registered; register it with "
        "POST /api/v1/charge-points",
    )


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "validation_error",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        response = _response(exc.status, exc.code, exc.message, exc.details)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return _response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "field": ".".join(str(part) for part in error.get("loc", ())),
                "reason": error.get("msg", ""),
            }
            for error in exc.errors()
        ]
        summary = "; ".join(f"{f['field']}: {f['reason']}" for f in fields[:5])
        return _response(422, "validation_error", f"invalid request: {summary}", {"fields": fields})

    @app.exception_handler(AlreadyExists)
    async def already_exists(request: Request, exc: AlreadyExists) -> JSONResponse:
        return _response(409, "already_exists", str(exc))

    @app.exception_handler(UnknownAction)
    async def unknown_action(request: Request, exc: UnknownAction) -> JSONResponse:
        return _response(
            404,
            "unknown_action",
            f"{exc} is not an action the Central System sends to a charge point",
        )

    @app.exception_handler(InvalidPayload)
    @app.exception_handler(OutgoingValidationError)
    async def invalid_payload(
        request: Request, exc: InvalidPayload | OutgoingValidationError
    ) -> JSONResponse:
        # Refused by the service (InvalidPayload) or by the session at the last moment
        # (OutgoingValidationError): either way nothing was sent.
        return _response(
            422,
            "invalid_payload",
            f"the {exc.action} payload does not conform to the OCPP 1.6 schema: "
            f"{exc.error.description}",
            {"ocppErrorCode": str(exc.error.code), **exc.error.details},
        )

    @app.exception_handler(UnknownChargePoint)
    async def unknown_charge_point(request: Request, exc: UnknownChargePoint) -> JSONResponse:
        return _response(
            404,
            "not_found",
            f"charge point {exc} is not registered; register it with POST /api/v1/charge-points",
        )

    @app.exception_handler(NotConnected)
    async def not_connected(request: Request, exc: NotConnected) -> JSONResponse:
        return _response(409, "not_connected", f"{exc}; retry once it has connected")

    @app.exception_handler(CallErrorReceived)
    async def call_error(request: Request, exc: CallErrorReceived) -> JSONResponse:
        return _response(
            502,
            "call_error",
            f"the charge point answered CALLERROR {exc.code}: {exc.description}",
            {"code": exc.code, "description": exc.description, "details": exc.details},
        )

    @app.exception_handler(InvalidCallResult)
    async def invalid_result(request: Request, exc: InvalidCallResult) -> JSONResponse:
        return _response(
            502,
            "invalid_call_result",
            f"the charge point's answer does not conform to the schema: {exc.error.description}",
            {"ocppErrorCode": str(exc.error.code), **exc.error.details},
        )

    @app.exception_handler(CallTimeout)
    async def timeout(request: Request, exc: CallTimeout) -> JSONResponse:
        return _response(504, "timeout", str(exc))
