"""``kilowatt config``: charge point configuration (OCPP 1.6 GetConfiguration/ChangeConfiguration).

``get``, ``diff``, ``unset``, ``set --desired``, ``template`` and ``keys`` work on the
database, like the other management commands. ``set``, ``apply`` and ``refresh``
talk to a charge point, so they are clients of a running server: they go through
its REST API (``--url``, ``--token`` or ``KILOWATT_API_TOKEN``), like ``kilowatt call``.

A write-only key (AuthorizationKey) is never printed: the server never returns it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from rich.text import Text

from kilowatt.api.routes.configuration import ConfigurationOut, DriftOut
from kilowatt.cli_common import (
    EXIT_ERROR,
    EXIT_USAGE,
    CommandError,
    Context,
    Output,
    Subcommands,
    add_command,
    add_store_options,
    cell,
    charge_point_id_argument,
    run_command,
    show_datetime,
)
from kilowatt.cli_http import (
    DEFAULT_URL,
    MAX_CALL_TIMEOUT,
    READ_MARGIN,
    TOKEN_ENV,
    api_request,
    api_target,
)
from kilowatt.domain.configuration import (
    CATALOGUE,
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    ConfigurationError,
    is_secret,
)
from kilowatt.services.commands import UnknownChargePoint
from kilowatt.services.configuration import ConfigurationView, UnknownTemplate
from kilowatt.store.base import AlreadyExists

__all__ = ["add_config_commands", "api_request"]

EXIT_DRIFT = 1  # `config diff --exit-code` when the charge point differs
_DRIFT_STYLES = {
    "differs": "yellow",
    "not_reported": "yellow",
    "unknown_key": "red",
    "read_only": "red",
    "reboot_pending": "cyan",
}


def add_config_commands(commands: Subcommands) -> None:
    group = commands.add_parser(
        "config",
        help="charge point configuration: get, set, diff, apply (OCPP 1.6 §9 keys)",
        description="The configuration of charge points: what each one reported "
        "(GetConfiguration), what the operator wants it to have (desired values, per "
        "charge point or from a template; per charge point wins), where they differ, and "
        "ChangeConfiguration. get/diff/template read and write the database; set, apply "
        "and refresh go through a running server's API.",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    get = add_command(
        actions,
        "get",
        config_get,
        help="show a charge point's reported and desired configuration and last answers",
        json_output=True,
    )
    get.add_argument("charge_point", metavar="CHARGE_POINT", type=charge_point_id_argument)

    diff = add_command(
        actions,
        "diff",
        config_diff,
        help="show where a charge point differs from its desired configuration",
        json_output=True,
    )
    diff.add_argument("charge_point", metavar="CHARGE_POINT", type=charge_point_id_argument)
    diff.add_argument(
        "--exit-code",
        action="store_true",
        help=f"exit with {EXIT_DRIFT} when there is a difference (for scripts)",
    )

    set_ = actions.add_parser(
        "set",
        help="change a key on a charge point (or, with --desired, set a desired value)",
        description="Send ChangeConfiguration through the running server's API and print "
        "the charge point's answer (Accepted, Rejected, RebootRequired, NotSupported). The "
        "value is checked against the OCPP 1.6 catalogue first. With --desired, nothing is "
        "sent: the value is stored as desired for this charge point (see `config diff`, "
        "`config apply`).",
        epilog="example: kilowatt config set CP1 MeterValueSampleInterval 60",
    )
    set_.add_argument("charge_point", metavar="CHARGE_POINT", type=charge_point_id_argument)
    set_.add_argument("key", metavar="KEY", type=_key)
    set_.add_argument(
        "value",
        metavar="VALUE",
        help="the value; '-' reads it from standard input (for AuthorizationKey, so that "
        "it stays out of the shell history)",
    )
    set_.add_argument(
        "--desired", action="store_true", help="store a desired value instead of sending it"
    )
    set_.add_argument(
        "--reset",
        choices=["soft", "hard"],
        help="if the charge point answers RebootRequired, reset it this way",
    )
    set_.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    _api_options(set_)
    add_store_options(set_)
    set_.set_defaults(runner=config_set)

    unset = add_command(
        actions,
        "unset",
        config_unset,
        help="remove a charge point's own desired value (its template's applies again)",
    )
    unset.add_argument("charge_point", metavar="CHARGE_POINT", type=charge_point_id_argument)
    unset.add_argument("key", metavar="KEY", type=_key)

    apply = actions.add_parser(
        "apply",
        help="send a charge point the desired values it does not have",
        description="Through the running server's API: fetch the desired keys from the "
        "charge point, then send a ChangeConfiguration for each one that differs.",
    )
    apply.add_argument("charge_point", metavar="CHARGE_POINT", type=charge_point_id_argument)
    apply.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    _api_options(apply)
    apply.set_defaults(runner=config_apply)

    refresh = actions.add_parser(
        "refresh",
        help="fetch a charge point's configuration now (GetConfiguration)",
        description="Through the running server's API: GetConfiguration for every key, or "
        "only the --key ones.",
    )
    refresh.add_argument("charge_point", metavar="CHARGE_POINT", type=charge_point_id_argument)
    refresh.add_argument(
        "--key", action="append", type=_key, metavar="KEY", help="only this key (repeatable)"
    )
    refresh.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    _api_options(refresh)
    refresh.set_defaults(runner=config_refresh)

    keys = add_command(
        actions,
        "keys",
        config_keys,
        help="list the standard OCPP 1.6 configuration keys Kilowatt knows",
        json_output=True,
    )
    keys.add_argument("--profile", help="only the keys of this profile, e.g. SmartCharging")

    _add_template_commands(actions)


def _add_template_commands(actions: Subcommands) -> None:
    group = actions.add_parser(
        "template",
        help="desired values shared by a group of charge points",
        description="A template holds desired values for every charge point assigned to "
        "it; a charge point's own desired values win over its template's.",
    )
    template = group.add_subparsers(dest="template_action", metavar="ACTION", required=True)
    add_command(template, "list", template_list, help="list the templates", json_output=True)
    show = add_command(template, "show", template_show, help="show a template", json_output=True)
    show.add_argument("name", metavar="NAME")
    add = add_command(template, "add", template_add, help="create a template")
    add.add_argument("name", metavar="NAME", type=_template_name)
    add.add_argument("--description", metavar="TEXT")
    remove = add_command(template, "remove", template_remove, help="delete a template")
    remove.add_argument("name", metavar="NAME")
    set_ = add_command(template, "set", template_set, help="set a value of a template")
    set_.add_argument("name", metavar="NAME")
    set_.add_argument("key", metavar="KEY", type=_key)
    set_.add_argument("value", metavar="VALUE")
    unset = add_command(template, "unset", template_unset, help="remove a value from a template")
    unset.add_argument("name", metavar="NAME")
    unset.add_argument("key", metavar="KEY", type=_key)
    assign = add_command(template, "assign", template_assign, help="give charge points a template")
    assign.add_argument("name", metavar="NAME")
    assign.add_argument(
        "charge_points", metavar="CHARGE_POINT", nargs="+", type=charge_point_id_argument
    )
    unassign = add_command(
        template, "unassign", template_unassign, help="take charge points out of their template"
    )
    unassign.add_argument(
        "charge_points", metavar="CHARGE_POINT", nargs="+", type=charge_point_id_argument
    )


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"where `kilowatt serve` serves the API (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        help=f"an admin API token (default: the environment variable {TOKEN_ENV})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long the server waits for the charge point's answer (default: its call_timeout)",
    )


def _key(text: str) -> str:
    if not 1 <= len(text) <= MAX_KEY_LENGTH:
        raise argparse.ArgumentTypeError(
            f"a configuration key has 1-{MAX_KEY_LENGTH} characters, {text!r} has {len(text)}"
        )
    return text


def _template_name(text: str) -> str:
    if not 1 <= len(text) <= 50 or "/" in text or text != text.strip():
        raise argparse.ArgumentTypeError(
            f"a template name has 1-50 characters, no '/' and no spaces at its ends: {text!r}"
        )
    return text


def _not_registered(charge_point_id: str) -> CommandError:
    return CommandError(
        f"charge point {charge_point_id!r} is not registered; see `kilowatt charge-point list`"
    )


def _client(args: argparse.Namespace, out: Output) -> tuple[str, str] | int:
    """The API base URL and token, or the exit code of a usage error."""
    target = api_target(args.url, args.token, out)
    if isinstance(target, int):
        return target
    if args.timeout is not None and not 0 < args.timeout <= MAX_CALL_TIMEOUT:
        out.error(f"--timeout must be more than 0 and at most {MAX_CALL_TIMEOUT:g} seconds")
        return EXIT_USAGE
    return target


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"timeout": f"{args.timeout:g}"} if args.timeout is not None else {}


def _wait(args: argparse.Namespace) -> float:
    return (args.timeout if args.timeout is not None else MAX_CALL_TIMEOUT) + READ_MARGIN


def _configuration_path(charge_point_id: str, *rest: str) -> str:
    parts = "".join(f"/{quote(part, safe='')}" for part in rest)
    return f"/api/v1/charge-points/{quote(charge_point_id, safe='')}/configuration{parts}"


# ------------------------------------------------------------ API commands


def config_set(args: argparse.Namespace) -> int:
    out = Output(sys.stdout, sys.stderr)
    if args.value == "-":
        args.value = sys.stdin.readline().rstrip("\r\n")
    if len(args.value) > MAX_VALUE_LENGTH:
        out.error(f"a configuration value has at most {MAX_VALUE_LENGTH} characters")
        return EXIT_USAGE
    if args.desired:
        if args.reset is not None:
            out.error("--reset sends a Reset after the change; with --desired nothing is sent")
            return EXIT_USAGE
        return run_command(args, _set_desired)
    client = _client(args, out)
    if isinstance(client, int):
        return client
    base, token = client
    params = _params(args)
    if args.reset is not None:
        params["reset"] = args.reset.capitalize()
    try:
        answer = api_request(
            "PUT",
            base,
            _configuration_path(args.charge_point, args.key),
            token,
            body={"value": args.value},
            params=params,
            wait=_wait(args),
        )
    except CommandError as exc:
        out.error(exc.message)
        return exc.code
    if args.json:
        out.json(answer)
        return 0
    out.line(_describe_change(args.charge_point, answer))
    if answer.get("status") == "RebootRequired" and answer.get("reset") is None:
        out.note(
            "The charge point applies it after a reboot; reset it with --reset soft|hard or "
            f'`kilowatt call {args.charge_point} Reset \'{{"type": "Soft"}}\'`.'
        )
    return 0


def _describe_change(charge_point_id: str, answer: dict[str, Any]) -> str:
    key = answer.get("key")
    shown = "(write-only, not shown)" if answer.get("secret") else answer.get("value")
    line = f"{charge_point_id} {key} = {shown}: {answer.get('status') or answer.get('error')}"
    reset = answer.get("reset")
    if isinstance(reset, dict):
        line += f"; {reset.get('type')} Reset: {reset.get('status') or reset.get('error')}"
    return line


def config_apply(args: argparse.Namespace) -> int:
    out = Output(sys.stdout, sys.stderr)
    client = _client(args, out)
    if isinstance(client, int):
        return client
    base, token = client
    try:
        answer = api_request(
            "POST",
            base,
            _configuration_path(args.charge_point, "apply"),
            token,
            params=_params(args),
            wait=_wait(args) * 4,  # a refresh and one change per key
        )
    except CommandError as exc:
        out.error(exc.message)
        return exc.code
    if args.json:
        out.json(answer)
        return 0
    changes = answer.get("changes", [])
    if not changes:
        out.line(f"{args.charge_point}: nothing to send")
    for change in changes:
        out.line(_describe_change(args.charge_point, change))
    for entry in answer.get("skipped", []):
        out.note(f"not sent: {entry['key']} ({entry['status']})")
    failed = [c for c in changes if c.get("status") != "Accepted"]
    return EXIT_ERROR if failed else 0


def config_refresh(args: argparse.Namespace) -> int:
    out = Output(sys.stdout, sys.stderr)
    client = _client(args, out)
    if isinstance(client, int):
        return client
    base, token = client
    params = _params(args)
    if args.key:
        params["key"] = args.key
    try:
        answer = api_request(
            "POST",
            base,
            _configuration_path(args.charge_point, "refresh"),
            token,
            params=params,
            wait=_wait(args),
        )
    except CommandError as exc:
        out.error(exc.message)
        return exc.code
    if args.json:
        out.json(answer)
        return 0
    reported = answer.get("reported", [])
    unknown = answer.get("unknown_keys", [])
    out.line(
        f"{args.charge_point}: {len(reported)} keys reported; unknown keys: "
        f"{', '.join(unknown) or 'none'}"
    )
    return 0


# ------------------------------------------------------- database commands


async def _view(context: Context) -> ConfigurationView:
    services = await context.services()
    charge_point_id: str = context.args.charge_point
    try:
        return await services.configuration.view(charge_point_id)
    except UnknownChargePoint:
        raise _not_registered(charge_point_id) from None


async def config_get(context: Context) -> None:
    view = await _view(context)
    out = context.out
    if context.args.json:
        out.json(ConfigurationOut.of(view).model_dump(mode="json"))
        return
    sync = view.sync
    synced = show_datetime(sync.synced_at) if sync is not None and sync.synced_at else "never"
    out.line(
        f"Charge point {view.charge_point_id}: synchronized {synced}; template "
        f"{view.template or '-'}"
    )
    if sync is not None and sync.error:
        out.warn(f"the last GetConfiguration failed ({show_datetime(sync.error_at)}): {sync.error}")
    if view.reboot_required:
        out.warn(
            "reboot required for: "
            + ", ".join(sorted(view.pending_reboot))
            + f' (reset it: `kilowatt call {view.charge_point_id} Reset \'{{"type": "Soft"}}\'`)'
        )
    reported = view.reported_values
    drift = {entry.key: entry for entry in view.drift}
    answers = {change.key: change for change in view.last_answers}
    keys = sorted({*reported, *view.desired, *answers})
    if not keys:
        out.line(
            "Nothing reported yet: it is fetched after the charge point boots, or with "
            f"`kilowatt config refresh {view.charge_point_id}`."
        )
        return
    table = out.new_table("Key", "Reported", "RO", "Desired", "Drift", "Last answer")
    for key in keys:
        entry = reported.get(key)
        secret = is_secret(key)
        if entry is None:
            shown: Text = cell(None)
        elif entry.unknown:
            shown = cell("(unknown key)", "red")
        else:
            shown = cell("(write-only)" if secret else entry.value)
        want = view.desired.get(key)
        desired = (
            cell(None)
            if want is None
            else cell(
                want.value if want.source == "charge-point" else f"{want.value} ({want.template})"
            )
        )
        state = drift.get(key)
        change = answers.get(key)
        answer = "-"
        if change is not None:
            when = show_datetime(change.answered_at or change.requested_at)
            answer = f"{change.status or change.error} {when}"
        table.add_row(
            cell(key, "bold"),
            shown,
            cell(None if entry is None or entry.unknown else entry.readonly),
            desired,
            cell(
                state.status.value if state else None,
                _DRIFT_STYLES.get(state.status.value, "") if state else "",
            ),
            cell(answer),
        )
    out.table(table)


async def config_diff(context: Context) -> None:
    view = await _view(context)
    out = context.out
    if context.args.json:
        out.json([DriftOut.of(entry).model_dump(mode="json") for entry in view.drift])
    elif not view.drift:
        out.line(
            f"{view.charge_point_id}: no difference from the desired configuration"
            + ("" if view.desired else " (no desired values)")
        )
    else:
        table = out.new_table("Key", "Desired", "Reported", "Status", "From")
        for entry in view.drift:
            table.add_row(
                cell(entry.key, "bold"),
                cell(entry.desired),
                cell(entry.reported),
                cell(entry.status.value, _DRIFT_STYLES.get(entry.status.value, "")),
                cell(entry.template if entry.source == "template" else "charge point"),
            )
        out.table(table)
        out.note(f"send it with `kilowatt config apply {view.charge_point_id}`")
    if context.args.exit_code and view.drift:
        raise CommandError(
            "the charge point differs from its desired configuration", code=EXIT_DRIFT
        )


async def _set_desired(context: Context) -> None:
    args = context.args
    services = await context.services()
    try:
        value = await services.configuration.set_desired(args.charge_point, args.key, args.value)
    except UnknownChargePoint:
        raise _not_registered(args.charge_point) from None
    except ConfigurationError as exc:
        raise CommandError(exc.message) from None
    context.out.line(f"{args.charge_point}: desired {args.key} = {value}")


async def config_unset(context: Context) -> None:
    args = context.args
    services = await context.services()
    if not await services.configuration.remove_desired(args.charge_point, args.key):
        raise CommandError(f"{args.charge_point} has no desired value for {args.key}")
    context.out.line(f"{args.charge_point}: desired {args.key} removed")


async def config_keys(context: Context) -> None:
    profile = context.args.profile
    keys = [k for k in CATALOGUE.values() if profile is None or k.profile.value == profile]
    out = context.out
    if context.args.json:
        out.json([key.describe() for key in keys])
        return
    table = out.new_table("Key", "Profile", "Type", "Access", "Unit", "Range", "Reference")
    for key in keys:
        span = None
        if key.minimum is not None or key.maximum is not None:
            low = "" if key.minimum is None else key.minimum
            high = "" if key.maximum is None else key.maximum
            span = f"{low}..{high}"
        table.add_row(
            cell(key.name, "bold"),
            cell(key.profile.value),
            cell(key.type.value),
            cell(key.access.value),
            cell(key.unit),
            cell(span),
            cell(key.reference),
        )
    out.table(table)


# ---------------------------------------------------------------- templates


async def template_list(context: Context) -> None:
    services = await context.services()
    templates = await services.configuration.list_templates()
    out = context.out
    if context.args.json:
        out.json([_template_json(t) for t in templates])
        return
    if not templates:
        out.line("No configuration templates; create one with `kilowatt config template add NAME`.")
        return
    table = out.new_table("Name", "Values", "Charge points", "Description")
    for template in templates:
        table.add_row(
            cell(template.name, "bold"),
            cell(len(template.values)),
            cell(", ".join(template.members)),
            cell(template.description),
        )
    out.table(table)


def _template_json(template: Any) -> dict[str, Any]:
    return {
        "name": template.name,
        "description": template.description,
        "values": dict(template.values),
        "members": list(template.members),
    }


async def template_show(context: Context) -> None:
    services = await context.services()
    template = await services.configuration.get_template(context.args.name)
    if template is None:
        raise CommandError(f"there is no configuration template {context.args.name!r}")
    out = context.out
    if context.args.json:
        out.json(_template_json(template))
        return
    out.line(f"Template {template.name}: {template.description or ''}".rstrip(": "))
    out.line(f"Charge points: {', '.join(template.members) or '-'}")
    table = out.new_table("Key", "Value")
    for key, value in template.values.items():
        table.add_row(cell(key, "bold"), cell(value))
    out.table(table)


async def template_add(context: Context) -> None:
    services = await context.services()
    try:
        await services.configuration.add_template(context.args.name, context.args.description)
    except AlreadyExists as exc:
        raise CommandError(str(exc)) from None
    context.out.line(f"template {context.args.name!r} created")


async def template_remove(context: Context) -> None:
    services = await context.services()
    if not await services.configuration.remove_template(context.args.name):
        raise CommandError(f"there is no configuration template {context.args.name!r}")
    context.out.line(f"template {context.args.name!r} removed")


async def template_set(context: Context) -> None:
    args = context.args
    services = await context.services()
    try:
        value = await services.configuration.set_template_value(args.name, args.key, args.value)
    except UnknownTemplate:
        raise CommandError(
            f"there is no configuration template {args.name!r}; create it with "
            f"`kilowatt config template add {args.name}`"
        ) from None
    except ConfigurationError as exc:
        raise CommandError(exc.message) from None
    context.out.line(f"template {args.name}: {args.key} = {value}")


async def template_unset(context: Context) -> None:
    args = context.args
    services = await context.services()
    if not await services.configuration.remove_template_value(args.name, args.key):
        raise CommandError(f"template {args.name!r} has no value for {args.key}")
    context.out.line(f"template {args.name}: {args.key} removed")


async def template_assign(context: Context) -> None:
    await _assign(context, context.args.name)


async def template_unassign(context: Context) -> None:
    await _assign(context, None)


async def _assign(context: Context, name: str | None) -> None:
    services = await context.services()
    for charge_point_id in context.args.charge_points:
        try:
            await services.configuration.assign_template(charge_point_id, name)
        except UnknownChargePoint:
            raise _not_registered(charge_point_id) from None
        except UnknownTemplate:
            raise CommandError(f"there is no configuration template {name!r}") from None
        context.out.line(
            f"{charge_point_id}: template {name}" if name else f"{charge_point_id}: no template"
        )
