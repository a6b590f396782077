"""``kilowatt charge-point``: register charge points and manage their credentials."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from kilowatt.cli_common import (
    CommandError,
    Context,
    Output,
    Subcommands,
    add_command,
    cell,
    charge_point_id_argument,
    command_text,
    confirm,
    generate_password,
    json_datetime,
    show_datetime,
    stdin_is_terminal,
)
from kilowatt.domain.models import ChargePoint, Connector, Registration, StatusRecord
from kilowatt.gateway.auth import hash_password
from kilowatt.services.charge_points import ChargePointService
from kilowatt.store.base import AlreadyExists

__all__ = ["add_charge_point_commands", "charge_point_json"]

HISTORY_LIMIT = 10
# OCPP 1.6 Security Whitepaper: AuthorizationKey, 16-40 characters.
PASSWORD_LENGTHS = range(16, 41)
_REGISTRATION_STYLES = {
    Registration.ACCEPTED: "green",
    Registration.PENDING: "yellow",
    Registration.REJECTED: "red",
}


def add_charge_point_commands(commands: Subcommands) -> None:
    group = commands.add_parser(
        "charge-point",
        help="register charge points, set passwords and security profiles",
        description="Manage the charge points the Central System knows. Changes apply to "
        "a connected charge point when it next connects or sends BootNotification.",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = add_command(
        actions,
        "add",
        charge_point_add,
        help="register a charge point",
        description="Register a charge point (registration Accepted unless --pending).",
    )
    add.add_argument("id", metavar="ID", type=charge_point_id_argument, help="charge point id")
    add.add_argument("--description", metavar="TEXT", help="free text, e.g. its location")
    _password_options(add, required=False)
    add.add_argument(
        "--security-profile",
        type=int,
        choices=range(4),
        metavar="0-3",
        help="its own security profile (default: the server's security_profile)",
    )
    add.add_argument(
        "--pending",
        action="store_true",
        help="register it as Pending (accept it later with `kilowatt charge-point accept`)",
    )

    add_command(actions, "list", charge_point_list, help="list the charge points", json_output=True)
    show = add_command(
        actions,
        "show",
        charge_point_show,
        help="show a charge point, its connectors and recent status notifications",
        json_output=True,
    )
    show.add_argument("id", metavar="ID")

    remove = add_command(
        actions,
        "remove",
        charge_point_remove,
        help="remove a charge point (its transactions are kept)",
        description="Remove a charge point and its connectors; its transactions, meter "
        "values and status history are kept. Asks for confirmation unless --yes.",
    )
    remove.add_argument("id", metavar="ID")
    remove.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    password = add_command(
        actions,
        "set-password",
        charge_point_set_password,
        help="set the Basic auth password (security profiles 1 and 2)",
        description="Set the password (AuthorizationKey) the charge point sends with HTTP "
        "Basic authentication. Only a hash of it is stored.",
    )
    password.add_argument("id", metavar="ID")
    _password_options(password, required=True)

    for name, handler, registration in (
        ("accept", charge_point_accept, Registration.ACCEPTED),
        ("reject", charge_point_reject, Registration.REJECTED),
    ):
        parser = add_command(
            actions, name, handler, help=f"set the registration to {registration.value}"
        )
        parser.add_argument("id", metavar="ID")

    profile = add_command(
        actions,
        "set-security-profile",
        charge_point_set_security_profile,
        help="set the charge point's security profile",
        description="Set the security profile the charge point must connect with: 0 no "
        "authentication, 1 Basic auth, 2 TLS + Basic auth, 3 TLS with a client certificate; "
        "`default` uses the server's security_profile.",
    )
    profile.add_argument("id", metavar="ID")
    profile.add_argument(
        "profile", metavar="0-3|default", type=_profile_argument, help="security profile"
    )


def _password_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--password",
        metavar="PW",
        type=_password_argument,
        help="the password (it shows in the shell history; prefer --generate-password)",
    )
    group.add_argument(
        "--generate-password",
        action="store_true",
        help="generate a random password and print it once",
    )


def _password_argument(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the password must not be empty")
    return text


def _profile_argument(text: str) -> int | None:
    if text.strip().lower() == "default":
        return None
    if text.strip() in {"0", "1", "2", "3"}:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a security profile; use 0-3 or default")


def _not_registered(charge_point_id: str) -> CommandError:
    return CommandError(
        f"charge point {charge_point_id!r} is not registered; add it with "
        f"{command_text('charge-point', 'add', charge_point_id)} "
        f"(see the registered ones with {command_text('charge-point', 'list')})"
    )


async def _get(context: Context, charge_point_id: str) -> tuple[ChargePointService, ChargePoint]:
    services = await context.services()
    point = await services.charge_points.get(charge_point_id)
    if point is None:
        raise _not_registered(charge_point_id)
    return services.charge_points, point


def _new_password(context: Context) -> tuple[str | None, bool]:
    """The password the options give and whether it was generated."""
    args = context.args
    if args.generate_password:
        return generate_password(), True
    password: str | None = args.password
    if password is not None and len(password) not in PASSWORD_LENGTHS:
        context.out.warn(
            f"the password has {len(password)} characters; charge points take an "
            "AuthorizationKey of 16-40 characters (OCPP 1.6 Security Whitepaper)"
        )
    return password, False


def _effective_profile(context: Context, point: ChargePoint) -> int:
    if point.security_profile is not None:
        return point.security_profile
    return context.settings.security_profile


def _check_credentials(context: Context, point: ChargePoint) -> None:
    profile = _effective_profile(context, point)
    if profile in {1, 2} and point.password_hash is None:
        context.out.warn(
            f"charge point {point.id!r} has no password, so it cannot connect with security "
            f"profile {profile}; set one with "
            f"{command_text('charge-point', 'set-password', point.id, '--generate-password')}"
        )


def _print_generated(out: Output, password: str) -> None:
    out.line(f"password: {password}")
    out.line(
        "This password is shown only once: configure it on the charge point now "
        "(its AuthorizationKey)."
    )


# -------------------------------------------------------------------- commands


async def charge_point_add(context: Context) -> None:
    args = context.args
    charge_point_id: str = args.id
    password, generated = _new_password(context)
    services = await context.services()
    registration = Registration.PENDING if args.pending else Registration.ACCEPTED
    try:
        point = await services.charge_points.register(
            charge_point_id,
            description=args.description,
            password_hash=hash_password(password) if password is not None else None,
            security_profile=args.security_profile,
            registration=registration,
        )
    except AlreadyExists:
        raise CommandError(
            f"charge point {charge_point_id!r} is registered already; see it with "
            f"{command_text('charge-point', 'show', charge_point_id)} or remove it first with "
            f"{command_text('charge-point', 'remove', charge_point_id)}"
        ) from None
    profile = (
        str(point.security_profile)
        if point.security_profile is not None
        else f"default ({context.settings.security_profile})"
    )
    context.out.line(
        f"charge point {charge_point_id!r} added: registration {registration.value}, "
        f"security profile {profile}, password {'set' if password is not None else 'not set'}"
    )
    if generated and password is not None:
        _print_generated(context.out, password)
    _check_credentials(context, point)


async def charge_point_list(context: Context) -> None:
    services = await context.services()
    points = await services.charge_points.list_charge_points()
    out = context.out
    if context.args.json:
        out.json([charge_point_json(point) for point in points])
        return
    if not points:
        out.line(
            "No charge points are registered; add one with "
            f"{command_text('charge-point', 'add', 'ID')}."
        )
        return
    table = out.new_table(
        "ID",
        "Registration",
        "Connected",
        "Last seen",
        "Vendor/Model",
        "Firmware",
        "Connectors",
    )
    for point in points:
        vendor_model = "/".join(part for part in (point.vendor, point.model) if part)
        table.add_row(
            cell(point.id, "bold"),
            _registration_cell(point.registration),
            cell(point.connected, "green" if point.connected else ""),
            cell(point.last_seen_at),
            cell(vendor_model),
            cell(point.firmware_version),
            cell(", ".join(_connector_summary(c) for c in point.connectors)),
        )
    out.table(table)


async def charge_point_show(context: Context) -> None:
    charge_point_id: str = context.args.id
    services = await context.services()
    point = await services.charge_points.get(charge_point_id)
    if point is None:
        raise _not_registered(charge_point_id)
    history = await services.store.read(
        lambda repos: repos.charge_points.list_status_history(charge_point_id, limit=HISTORY_LIMIT)
    )
    out = context.out
    if context.args.json:
        data = charge_point_json(point)
        data["status_history"] = [_status_json(record) for record in history]
        out.json(data)
        return

    default = context.settings.security_profile
    fields: list[tuple[str, object]] = [
        ("ID", point.id),
        ("Description", point.description),
        ("Registration", point.registration.value),
        (
            "Security profile",
            point.security_profile
            if point.security_profile is not None
            else f"default ({default})",
        ),
        ("Password", "set" if point.password_hash else "not set"),
        ("Connected", _connection_text(point)),
        ("Last seen", point.last_seen_at),
        ("Last boot", point.last_boot_at),
        ("Vendor", point.vendor),
        ("Model", point.model),
        ("Serial number", point.serial_number),
        ("Charge box serial number", point.charge_box_serial_number),
        ("Firmware version", point.firmware_version),
        ("ICCID", point.iccid),
        ("IMSI", point.imsi),
        ("Meter type", point.meter_type),
        ("Meter serial number", point.meter_serial_number),
        ("Registered at", point.created_at),
    ]
    table = out.new_table("Field", "Value", header=False)
    for name, value in fields:
        table.add_row(Text(name, style="bold"), cell(value))
    out.table(table)

    out.line()
    if point.connectors:
        out.line("Connectors:")
        connectors = out.new_table(
            "Connector", "Status", "Error code", "Info", "Vendor error", "Status time", "Updated"
        )
        for connector in point.connectors:
            connectors.add_row(
                cell(connector.connector_id),
                cell(connector.status, _status_style(connector.status)),
                cell(connector.error_code),
                cell(connector.info),
                cell(_vendor_error(connector.vendor_id, connector.vendor_error_code)),
                cell(connector.status_timestamp),
                cell(connector.updated_at),
            )
        out.table(connectors)
    else:
        out.line("Connectors: none reported yet (they appear with StatusNotification)")

    out.line()
    if history:
        out.line(f"Recent status notifications (newest first, at most {HISTORY_LIMIT}):")
        recent = out.new_table(
            "Received", "Connector", "Status", "Error code", "Info", "Vendor error", "Timestamp"
        )
        for record in history:
            recent.add_row(
                cell(record.received_at),
                cell(record.connector_id),
                cell(record.status, _status_style(record.status)),
                cell(record.error_code),
                cell(record.info),
                cell(_vendor_error(record.vendor_id, record.vendor_error_code)),
                cell(record.timestamp),
            )
        out.table(recent)
    else:
        out.line("Recent status notifications: none")


async def charge_point_remove(context: Context) -> None:
    args = context.args
    charge_point_id: str = args.id
    charge_points, point = await _get(context, charge_point_id)
    out = context.out
    if not args.yes:
        if not stdin_is_terminal():
            raise CommandError(
                f"not removing charge point {charge_point_id!r}: confirmation is needed and "
                "there is no terminal to ask on; add --yes to remove it"
            )
        if not confirm(
            out,
            f"Remove charge point {charge_point_id!r} and its connectors? Its transactions "
            "and status history are kept.",
        ):
            raise CommandError(f"charge point {charge_point_id!r} not removed (not confirmed)")
    await charge_points.remove(charge_point_id)
    out.line(
        f"charge point {charge_point_id!r} removed (its transactions, meter values and "
        "status history are kept)"
    )
    if point.connected:
        out.warn(
            f"{charge_point_id!r} is connected now: the open connection stays up until it "
            "closes, and a reconnection is treated as an unknown charge point"
        )


async def charge_point_set_password(context: Context) -> None:
    charge_point_id: str = context.args.id
    charge_points, point = await _get(context, charge_point_id)
    password, generated = _new_password(context)
    assert password is not None  # the option group is required
    await charge_points.update(charge_point_id, password_hash=hash_password(password))
    out = context.out
    out.line(f"password of charge point {charge_point_id!r} set")
    if generated:
        _print_generated(out, password)
    profile = _effective_profile(context, point)
    if profile not in {1, 2}:
        out.warn(
            f"the password is checked only with security profile 1 or 2, and "
            f"{charge_point_id!r} uses {profile}; change that with "
            f"{command_text('charge-point', 'set-security-profile', charge_point_id, '1')}"
        )
    if point.connected:
        out.note("The open connection is not affected; the password applies when it reconnects.")


async def _set_registration(context: Context, registration: Registration) -> None:
    charge_point_id: str = context.args.id
    charge_points, point = await _get(context, charge_point_id)
    out = context.out
    if point.registration is registration:
        out.line(f"charge point {charge_point_id!r} is {registration.value} already")
        return
    await charge_points.update(charge_point_id, registration=registration)
    out.line(
        f"charge point {charge_point_id!r}: registration {registration.value} "
        f"(was {point.registration.value})"
    )
    if point.connected:
        out.note(
            "It is connected now: it learns the new registration at its next "
            "BootNotification or connection."
        )


async def charge_point_accept(context: Context) -> None:
    await _set_registration(context, Registration.ACCEPTED)


async def charge_point_reject(context: Context) -> None:
    await _set_registration(context, Registration.REJECTED)


async def charge_point_set_security_profile(context: Context) -> None:
    charge_point_id: str = context.args.id
    profile: int | None = context.args.profile
    charge_points, point = await _get(context, charge_point_id)
    await charge_points.update(charge_point_id, security_profile=profile)
    point.security_profile = profile
    shown = (
        str(profile) if profile is not None else f"default ({context.settings.security_profile})"
    )
    context.out.line(f"charge point {charge_point_id!r}: security profile {shown}")
    _check_credentials(context, point)
    if point.connected:
        context.out.note(
            "The open connection is not affected; the profile applies when it reconnects."
        )


# ------------------------------------------------------------------- rendering


def _registration_cell(registration: Registration) -> Text:
    return cell(registration.value, _REGISTRATION_STYLES.get(registration, ""))


def _status_style(status: str) -> str:
    if status == "Available":
        return "green"
    if status == "Faulted":
        return "red"
    if status == "Unavailable":
        return "yellow"
    return "cyan"


def _connector_summary(connector: Connector) -> str:
    text = f"{connector.connector_id}:{connector.status}"
    if connector.error_code and connector.error_code != "NoError":
        text += f"/{connector.error_code}"
    return text


def _vendor_error(vendor_id: str | None, code: str | None) -> str | None:
    parts = [part for part in (vendor_id, code) if part]
    return " ".join(parts) if parts else None


def _connection_text(point: ChargePoint) -> str:
    if not point.connected:
        return "no"
    details = []
    if point.connected_since is not None:
        details.append(f"since {show_datetime(point.connected_since)}")
    if point.remote_address:
        details.append(f"from {point.remote_address}")
    return " ".join(["yes", *details])


def _connector_json(connector: Connector) -> dict[str, Any]:
    return {
        "connector_id": connector.connector_id,
        "status": connector.status,
        "error_code": connector.error_code,
        "info": connector.info,
        "vendor_id": connector.vendor_id,
        "vendor_error_code": connector.vendor_error_code,
        "status_timestamp": json_datetime(connector.status_timestamp),
        "updated_at": json_datetime(connector.updated_at),
    }


def _status_json(record: StatusRecord) -> dict[str, Any]:
    return {
        "connector_id": record.connector_id,
        "status": record.status,
        "error_code": record.error_code,
        "info": record.info,
        "vendor_id": record.vendor_id,
        "vendor_error_code": record.vendor_error_code,
        "timestamp": json_datetime(record.timestamp),
        "received_at": json_datetime(record.received_at),
    }


def charge_point_json(point: ChargePoint) -> dict[str, Any]:
    """Everything about a charge point but its password hash."""
    return {
        "id": point.id,
        "description": point.description,
        "registration": point.registration.value,
        "security_profile": point.security_profile,
        "password_set": point.password_hash is not None,
        "connected": point.connected,
        "connected_since": json_datetime(point.connected_since),
        "remote_address": point.remote_address,
        "last_seen_at": json_datetime(point.last_seen_at),
        "last_boot_at": json_datetime(point.last_boot_at),
        "vendor": point.vendor,
        "model": point.model,
        "serial_number": point.serial_number,
        "charge_box_serial_number": point.charge_box_serial_number,
        "firmware_version": point.firmware_version,
        "iccid": point.iccid,
        "imsi": point.imsi,
        "meter_type": point.meter_type,
        "meter_serial_number": point.meter_serial_number,
        "created_at": json_datetime(point.created_at),
        "connectors": [_connector_json(connector) for connector in point.connectors],
    }
