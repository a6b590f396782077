"""``kilowatt id-tag``: the id tags (RFID cards, tokens) that may charge."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text

from kilowatt.cli_common import (
    CommandError,
    Context,
    Subcommands,
    add_command,
    cell,
    command_text,
    id_tag_argument,
    id_tag_status_argument,
    iso_datetime,
    json_datetime,
    positive_int,
)
from kilowatt.domain.id_tag_csv import (
    CSV_COLUMNS,
    OWNER_MAX_LENGTH,
    parse_id_tag_csv,
    write_id_tag_csv,
)
from kilowatt.domain.models import AuthorizationStatus, IdTag
from kilowatt.store.base import AlreadyExists

__all__ = ["add_id_tag_commands"]

PAGE = 1000
_STATUS_STYLES = {
    AuthorizationStatus.ACCEPTED: "green",
    AuthorizationStatus.BLOCKED: "red",
    AuthorizationStatus.EXPIRED: "yellow",
    AuthorizationStatus.INVALID: "red",
}


def add_id_tag_commands(commands: Subcommands) -> None:
    group = commands.add_parser(
        "id-tag",
        help="the id tags (RFID cards, tokens) that may charge",
        description="Manage the id tags the Central System authorizes.",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = add_command(actions, "add", id_tag_add, help="add an id tag")
    add.add_argument("tag", metavar="TAG", type=id_tag_argument, help="the idTag (1-20 chars)")
    add.add_argument(
        "--expires",
        metavar="ISO8601",
        type=iso_datetime,
        help="expiry date-time, e.g. 2026-12-31T23:59:59Z (UTC when no zone is given)",
    )
    add.add_argument("--parent", metavar="TAG", type=id_tag_argument, help="parent idTag (a group)")
    add.add_argument("--owner", metavar="TEXT", help="who holds it")
    add.add_argument("--note", metavar="TEXT", help="free text")
    add.add_argument(
        "--max-concurrent",
        metavar="N",
        type=positive_int,
        default=1,
        help="transactions it may have running at once (default 1)",
    )
    add.add_argument(
        "--status",
        metavar="Accepted|Blocked|Expired|Invalid",
        type=id_tag_status_argument,
        default=AuthorizationStatus.ACCEPTED,
        help="default Accepted",
    )

    add_command(actions, "list", id_tag_list, help="list the id tags", json_output=True)
    for name, handler, text in (
        ("block", id_tag_block, "block an id tag (status Blocked)"),
        ("unblock", id_tag_unblock, "unblock an id tag (status Accepted)"),
        ("remove", id_tag_remove, "remove an id tag (its transactions are kept)"),
    ):
        parser = add_command(actions, name, handler, help=text)
        parser.add_argument("tag", metavar="TAG")

    columns = ",".join(CSV_COLUMNS)
    load = add_command(
        actions,
        "import",
        id_tag_import,
        help="import id tags from a CSV file",
        description=f"Import id tags from a CSV file (UTF-8) with the header line {columns}. "
        "Only id_tag is required; empty cells take the defaults (status Accepted, no expiry, "
        "max_concurrent_transactions 1). Every row is checked first: if any is bad, all bad "
        "rows are reported and nothing is imported. The import is one database transaction.",
    )
    load.add_argument("file", metavar="FILE.csv", help="the CSV file; - reads standard input")
    load.add_argument(
        "--replace",
        action="store_true",
        help="update id tags that exist already (default: keep them unchanged)",
    )
    dump = add_command(
        actions,
        "export",
        id_tag_export,
        help="export the id tags as CSV",
        description=f"Write every id tag as CSV with the header line {columns} "
        "(the format `kilowatt id-tag import` reads).",
    )
    dump.add_argument(
        "file", metavar="FILE", nargs="?", help="where to write (default: standard output)"
    )


def _unknown(tag: str) -> CommandError:
    return CommandError(
        f"id tag {tag!r} is not known; add it with {command_text('id-tag', 'add', tag)} "
        f"(see the known ones with {command_text('id-tag', 'list')})"
    )


# -------------------------------------------------------------------- commands


async def id_tag_add(context: Context) -> None:
    args = context.args
    tag = IdTag(
        id_tag=args.tag,
        status=args.status,
        expiry_date=args.expires,
        parent_id_tag=args.parent,
        owner=args.owner,
        note=args.note,
        max_concurrent_transactions=args.max_concurrent,
    )
    if tag.owner is not None and len(tag.owner) > OWNER_MAX_LENGTH:
        raise CommandError(f"--owner is longer than {OWNER_MAX_LENGTH} characters; shorten it")
    services = await context.services()
    try:
        await services.authorization.add(tag)
    except AlreadyExists:
        raise CommandError(
            f"id tag {tag.id_tag!r} exists already; remove it first with "
            f"{command_text('id-tag', 'remove', tag.id_tag)}, or change tags in bulk with "
            f"{command_text('id-tag', 'import', 'FILE.csv', '--replace')}"
        ) from None
    expiry = f", expires {json_datetime(tag.expiry_date)}" if tag.expiry_date else ""
    context.out.line(f"id tag {tag.id_tag!r} added: {tag.status.value}{expiry}")
    if tag.expiry_date is not None and tag.expiry_date <= services.clock.now():
        context.out.warn(f"the expiry date is in the past: {tag.id_tag!r} is answered Expired")


async def id_tag_list(context: Context) -> None:
    services = await context.services()
    tags = await services.authorization.list_all_id_tags(page=PAGE)
    out = context.out
    if context.args.json:
        out.json([id_tag_json(tag) for tag in tags])
        return
    if not tags:
        out.line(
            f"No id tags yet; add one with {command_text('id-tag', 'add', 'TAG')} or import "
            f"a file with {command_text('id-tag', 'import', 'FILE.csv')}."
        )
        return
    now = services.clock.now()
    table = out.new_table("ID tag", "Status", "Expires", "Parent", "Owner", "Max tx", "Note")
    for tag in tags:
        table.add_row(
            cell(tag.id_tag, "bold"),
            _status_cell(tag, now),
            cell(tag.expiry_date),
            cell(tag.parent_id_tag),
            cell(tag.owner),
            cell(tag.max_concurrent_transactions),
            cell(tag.note),
        )
    out.table(table)


async def _set_status(context: Context, status: AuthorizationStatus) -> None:
    tag_id: str = context.args.tag
    services = await context.services()
    tag = await services.authorization.get(tag_id)
    if tag is None:
        raise _unknown(tag_id)
    if tag.status is status:
        context.out.line(f"id tag {tag_id!r} is {status.value} already")
        return
    await services.authorization.update(tag_id, status=status)
    context.out.line(f"id tag {tag_id!r}: {status.value} (was {tag.status.value})")


async def id_tag_block(context: Context) -> None:
    await _set_status(context, AuthorizationStatus.BLOCKED)


async def id_tag_unblock(context: Context) -> None:
    await _set_status(context, AuthorizationStatus.ACCEPTED)


async def id_tag_remove(context: Context) -> None:
    tag_id: str = context.args.tag
    services = await context.services()
    if not await services.authorization.remove(tag_id):
        raise _unknown(tag_id)
    context.out.line(f"id tag {tag_id!r} removed (its transactions are kept)")


async def id_tag_import(context: Context) -> None:
    args = context.args
    name: str = args.file
    replace: bool = args.replace
    # Check the whole file before the database is even opened.
    tags, problems = _read_csv(name)
    if problems:
        raise CommandError(
            f"nothing was imported from {name}; fix these problems and import it again:\n"
            + "\n".join(f"  {problem}" for problem in problems)
        )
    if not tags:
        context.out.line(f"{name} has no id tags (only a header line); nothing imported")
        return
    services = await context.services()
    added, updated = await services.authorization.import_id_tags(tags, replace=replace)
    skipped = len(tags) - added - updated
    summary = f"imported {name}: {added} added, {updated} updated"
    if skipped:
        summary += f", {skipped} skipped because they exist already (--replace updates them)"
    context.out.line(summary)


async def id_tag_export(context: Context) -> None:
    target: str | None = context.args.file
    services = await context.services()
    tags = await services.authorization.list_all_id_tags(page=PAGE)
    if target is None or target == "-":
        write_id_tag_csv(context.out.stdout, tags)
        return
    _write_file(target, tags)
    context.out.line(f"exported {len(tags)} id tags to {target}")


# ------------------------------------------------------------------------ CSV


def _write_file(name: str, tags: list[IdTag]) -> None:
    try:
        with Path(name).open("w", encoding="utf-8", newline="") as handle:
            write_id_tag_csv(handle, tags)
    except OSError as exc:
        raise CommandError(
            f"cannot write {name}: {exc.strerror or exc}; choose another FILE"
        ) from None


def _read_csv(name: str) -> tuple[list[IdTag], list[str]]:
    if name == "-":
        return parse_id_tag_csv(sys.stdin)
    try:
        with Path(name).open(encoding="utf-8-sig", newline="") as handle:
            return parse_id_tag_csv(handle)
    except UnicodeDecodeError:
        raise CommandError(
            f'{name} is not UTF-8 text; save it as UTF-8 ("CSV UTF-8") and import it again'
        ) from None
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------- rendering


def _status_cell(tag: IdTag, now: datetime) -> Text:
    if (
        tag.status is AuthorizationStatus.ACCEPTED
        and tag.expiry_date is not None
        and tag.expiry_date <= now
    ):
        return cell("Accepted (expired)", "yellow")
    return cell(tag.status.value, _STATUS_STYLES.get(tag.status, ""))


def id_tag_json(tag: IdTag) -> dict[str, Any]:
    return {
        "id_tag": tag.id_tag,
        "status": tag.status.value,
        "expiry_date": json_datetime(tag.expiry_date),
        "parent_id_tag": tag.parent_id_tag,
        "owner": tag.owner,
        "note": tag.note,
        "max_concurrent_transactions": tag.max_concurrent_transactions,
        "created_at": json_datetime(tag.created_at),
    }
