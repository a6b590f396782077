"""``kilowatt api-token`` (bearer tokens of the operator API) and ``kilowatt call``.

``api-token`` works on the database, like the other management commands.
``kilowatt call`` is a client of a running server instead: it sends one OCPP CALL
to a connected charge point through ``POST /api/v1/charge-points/{id}/calls/{action}``
and prints the charge point's answer.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any
from urllib.parse import quote

from kilowatt.cli_common import (
    CommandError,
    Context,
    Output,
    Subcommands,
    add_command,
    cell,
    charge_point_id_argument,
    command_text,
    json_datetime,
)
from kilowatt.cli_http import (
    DEFAULT_URL,
    MAX_CALL_TIMEOUT,
    READ_MARGIN,
    TOKEN_ENV,
    api_request,
    api_target,
)
from kilowatt.domain.models import ApiToken
from kilowatt.services.api_tokens import Role
from kilowatt.store.base import AlreadyExists

__all__ = ["add_api_commands", "call_command"]

TOKEN_NAME_MAX_LENGTH = 100  # the api_tokens.name column


def add_api_commands(commands: Subcommands) -> None:
    group = commands.add_parser(
        "api-token",
        help="bearer tokens of the operator API",
        description="Manage the bearer tokens the REST API (/api/v1) accepts. Only a "
        "digest of each token is stored: its secret is shown once, when it is created.",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = add_command(
        actions,
        "create",
        api_token_create,
        help="create a token and print its secret (once)",
        description="Create an API token and print its secret on standard output. It is "
        "shown only this once. Admin tokens may do everything, including remote control "
        "of charge points; read tokens may only GET.",
    )
    create.add_argument("name", metavar="NAME", type=_token_name, help="a name to know it by")
    create.add_argument(
        "--role",
        choices=[role.value for role in Role],
        default=Role.ADMIN.value,
        help="admin (default) or read (GET requests only)",
    )
    add_command(
        actions,
        "list",
        api_token_list,
        help="list the tokens (names and roles; secrets are never shown)",
        json_output=True,
    )
    revoke = add_command(
        actions,
        "revoke",
        api_token_revoke,
        help="revoke a token (it stops working at once)",
    )
    revoke.add_argument("name", metavar="NAME")

    call = commands.add_parser(
        "call",
        help="send an OCPP CALL to a connected charge point through a running server",
        description="Send one OCPP 1.6 CALL (Reset, RemoteStartTransaction, "
        "ChangeConfiguration, ...) to a charge point connected to a running "
        "`kilowatt serve`, through its REST API, and print the charge point's answer "
        "(JSON). Needs an admin API token (`kilowatt api-token create NAME`).",
        epilog='example: kilowatt call CP1 Reset \'{"type": "Soft"}\'',
    )
    call.add_argument("charge_point", metavar="CHARGE_POINT", type=charge_point_id_argument)
    call.add_argument("action", metavar="ACTION", help="the OCPP action, e.g. Reset")
    call.add_argument(
        "payload",
        metavar="JSON",
        nargs="?",
        type=_json_object,
        default={},
        help="the payload as a JSON object, as in the specification (default {})",
    )
    call.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"where `kilowatt serve` serves the API (default {DEFAULT_URL})",
    )
    call.add_argument(
        "--token",
        help=f"an admin API token (default: the environment variable {TOKEN_ENV}; "
        "on the command line it shows in the shell history)",
    )
    call.add_argument(
        "--timeout",
        type=_call_timeout,
        metavar="SECONDS",
        help="how long the server waits for the charge point's answer "
        "(default: the server's call_timeout)",
    )
    call.set_defaults(runner=call_command)


# --------------------------------------------------------- argument checking


def _token_name(text: str) -> str:
    if not 1 <= len(text) <= TOKEN_NAME_MAX_LENGTH:
        raise argparse.ArgumentTypeError(
            f"a token name has 1-{TOKEN_NAME_MAX_LENGTH} characters, {text!r} has {len(text)}"
        )
    if not text.isprintable() or text != text.strip():
        raise argparse.ArgumentTypeError(
            f"token name {text!r} must be printable, without spaces at its ends"
        )
    return text


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"the payload is not valid JSON ({exc}): {text!r}; quote it for the shell, "
            'e.g. \'{"type": "Soft"}\''
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"the payload must be a JSON object ({{...}}), not {type(value).__name__}: {text!r}"
        )
    return value


def _call_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_CALL_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"expected seconds, more than 0 and at most {MAX_CALL_TIMEOUT:g}, got {text!r}"
        )
    return value


# ------------------------------------------------------------------ api-token


async def api_token_create(context: Context) -> None:
    name: str = context.args.name
    role = Role(context.args.role)
    services = await context.services()
    try:
        _, secret = await services.tokens.create(name, role)
    except AlreadyExists:
        raise CommandError(
            f"an API token named {name!r} exists already (the names of revoked tokens stay "
            f"taken); choose another name, see them with {command_text('api-token', 'list')}"
        ) from None
    out = context.out
    out.line(secret)
    out.note(
        f"API token {name!r} created (role {role.value}). This is the only time its secret "
        "is shown: it cannot be shown again, so store it now. Send it as "
        f"'Authorization: Bearer <token>', or set {TOKEN_ENV} for `kilowatt call`. "
        f"Revoke it with {command_text('api-token', 'revoke', name)}."
    )


def _token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "name": token.name,
        "role": token.role,
        "created_at": json_datetime(token.created_at),
        "revoked_at": json_datetime(token.revoked_at),
    }


async def api_token_list(context: Context) -> None:
    services = await context.services()
    tokens = await services.tokens.list_api_tokens()
    out = context.out
    if context.args.json:
        out.json([_token_json(token) for token in tokens])
        return
    if not tokens:
        out.line(
            f"No API tokens yet; create one with {command_text('api-token', 'create', 'NAME')}."
        )
        return
    table = out.new_table("Name", "Role", "Created", "Revoked")
    for token in tokens:
        table.add_row(
            cell(token.name, "bold" if token.revoked_at is None else "dim"),
            cell(token.role),
            cell(token.created_at),
            cell(token.revoked_at, "red"),
        )
    out.table(table)


async def api_token_revoke(context: Context) -> None:
    name: str = context.args.name
    services = await context.services()
    if await services.tokens.revoke(name):
        context.out.line(f"API token {name!r} revoked")
        return
    tokens = await services.tokens.list_api_tokens()
    if any(token.name == name for token in tokens):
        raise CommandError(f"API token {name!r} is revoked already")
    raise CommandError(
        f"there is no API token named {name!r}; see them with {command_text('api-token', 'list')}"
    )


# ----------------------------------------------------------------------- call


def call_command(args: argparse.Namespace) -> int:
    """``kilowatt call``: one CALL through the API of a running server; the exit code."""
    out = Output(sys.stdout, sys.stderr)
    target = api_target(args.url, args.token, out)
    if isinstance(target, int):
        return target
    base, token = target
    try:
        answer = _post_call(
            base,
            token,
            args.charge_point,
            args.action,
            args.payload,
            args.timeout,
        )
    except CommandError as exc:
        out.error(exc.message)
        return exc.code
    out.json(answer)
    return 0


def _post_call(
    base: str,
    token: str,
    charge_point_id: str,
    action: str,
    payload: dict[str, Any],
    timeout: float | None,
) -> Any:
    path = f"/api/v1/charge-points/{quote(charge_point_id, safe='')}/calls/{quote(action, safe='')}"
    params = {"timeout": f"{timeout:g}"} if timeout is not None else None
    wait = (timeout if timeout is not None else MAX_CALL_TIMEOUT) + READ_MARGIN
    return api_request("POST", base, path, token, body=payload, params=params, wait=wait)
