"""Typed dependencies of the API routes: the services, and who is asking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from kilowatt.api.errors import ApiError
from kilowatt.bus.events import EventBus
from kilowatt.config import Settings
from kilowatt.domain.models import ApiToken
from kilowatt.services.api_tokens import ApiTokenService, Role
from kilowatt.services.authorization import AuthorizationService
from kilowatt.services.charge_points import ChargePointService
from kilowatt.services.commands import CommandService
from kilowatt.services.configuration import ConfigurationService
from kilowatt.services.message_log import MessageLog
from kilowatt.services.transactions import TransactionService
from kilowatt.store.base import Store

__all__ = ["Admin", "ApiContext", "ChargePointId", "Context", "Reader", "context"]

# A charge point id in a path: what the gateway accepts in a connection URL.
ChargePointId = Annotated[str, Path(min_length=1, max_length=48)]


@dataclass
class ApiContext:
    """Everything the routes use; built by the composition root, kept on app.state."""

    settings: Settings
    store: Store
    charge_points: ChargePointService
    authorization: AuthorizationService
    transactions: TransactionService
    commands: CommandService
    tokens: ApiTokenService
    extras: dict[str, Any]
    # The event stream and the message log (None: the message log is disabled).
    events: EventBus | None = None
    message_log: MessageLog | None = None
    configuration: ConfigurationService | None = None


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.kilowatt
    return ctx


Context = Annotated[ApiContext, Depends(context)]


async def _token(request: Request, ctx: Context) -> ApiToken:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(create one with `kilowatt api-token create NAME`)",
        )
    token = await ctx.tokens.verify(secret.strip())
    if token is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API token")
    return token


async def _reader(token: Annotated[ApiToken, Depends(_token)]) -> ApiToken:
    return token


async def _admin(request: Request, token: Annotated[ApiToken, Depends(_token)]) -> ApiToken:
    if token.role != Role.ADMIN.value:
        raise ApiError(
            403,
            "forbidden",
            f"the token {token.name!r} is read-only; {request.method} needs an admin token",
        )
    return token


Reader = Annotated[ApiToken, Depends(_reader)]
Admin = Annotated[ApiToken, Depends(_admin)]
