"""Plumbing shared by the management commands of :mod:`kilowatt.cli`.

A command is an ``async def handler(context: Context) -> None``. :func:`run_command`
loads the settings exactly as ``kilowatt serve`` does, runs the handler on a fresh
event loop and closes the store afterwards; the handler opens the store only when it
needs it (``await context.services()``), so a command that fails on its input
touches no database. A handler reports a problem the operator can fix by raising
:class:`CommandError` with a message that says what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import secrets
import shlex
import string
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, TypeAlias

from alembic.util import CommandError as AlembicCommandError
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from kilowatt.app import SchemaOutOfDate, Services, build_services, prepare_database
from kilowatt.config import ConfigError, Settings, load_settings
from kilowatt.domain.id_tag_csv import (
    ID_TAG_MAX_LENGTH,
    ID_TAG_STATUSES,
    check_id_tag,
    parse_id_tag_status,
)
from kilowatt.domain.models import AuthorizationStatus
from kilowatt.domain.timestamps import parse_timestamp, utc_text
from kilowatt.gateway.auth import MAX_CHARGE_POINT_ID_LENGTH
from kilowatt.store.sql.database import DatabaseUrlError

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "ID_TAG_MAX_LENGTH",
    "CommandError",
    "Context",
    "Handler",
    "Output",
    "Subcommands",
    "add_command",
    "add_store_options",
    "cell",
    "charge_point_id_argument",
    "check_id_tag",
    "command_text",
    "confirm",
    "generate_password",
    "id_tag_argument",
    "id_tag_status_argument",
    "iso_datetime",
    "json_datetime",
    "parse_id_tag_status",
    "positive_int",
    "run_command",
    "show_datetime",
    "stdin_is_terminal",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# OCPP 1.6 idToken: CiString20Type.
GENERATED_PASSWORD_LENGTH = 24
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
# Plain (not a terminal) output is not wrapped: one record per line for grep and awk.
_PLAIN_WIDTH = 4096


class CommandError(Exception):
    """A problem the operator can fix; the message says how. Exit code 1."""

    def __init__(self, message: str, *, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --------------------------------------------------------------------- output


class Output:
    """stdout/stderr of one command: plain text, rich tables, JSON."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = _isatty(stdout)

    def line(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def note(self, text: str) -> None:
        """A remark about the output (stderr, so that stdout stays parseable)."""
        print(text, file=self.stderr)

    def warn(self, text: str) -> None:
        print(f"kilowatt: warning: {text}", file=self.stderr)

    def error(self, text: str) -> None:
        print(f"kilowatt: {text}", file=self.stderr)

    def json(self, data: object) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False), file=self.stdout)

    def new_table(self, *columns: str, header: bool = True) -> Table:
        """A table styled for where the output goes: boxed on a terminal, plain otherwise."""
        if self.terminal:
            table = Table(box=box.ROUNDED, show_header=header, header_style="bold")
        else:
            table = Table(box=None, show_header=header, header_style="", pad_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold", min_width=len(column))
        return table

    def table(self, table: Table) -> None:
        if self.terminal:
            Console(file=self.stdout).print(table)
            return
        buffer = io.StringIO()
        Console(
            file=buffer,
            width=_PLAIN_WIDTH,
            color_system=None,
            force_terminal=False,
            no_color=True,
            highlight=False,
            emoji=False,
        ).print(table)
        for text_line in buffer.getvalue().splitlines():
            print(text_line.rstrip(), file=self.stdout)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def cell(value: object, style: str = "") -> Text:
    """A table cell holding ``value`` as text (never read as rich markup); '-' for None."""
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no", style=style)
    if isinstance(value, datetime):
        return Text(show_datetime(value), style=style)
    return Text(str(value), style=style)


def show_datetime(value: datetime | None) -> str:
    """For people: UTC to the second, one token (``2026-01-31T12:00:00Z``)."""
    if value is None:
        return "-"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


json_datetime = utc_text  # for scripts: ISO 8601 UTC with microseconds when any


# --------------------------------------------------------- argument checking


def command_text(*words: str) -> str:
    """A command line to tell the user to run, quoted: ```kilowatt id-tag list```."""
    return "`kilowatt " + " ".join(shlex.quote(word) for word in words) + "`"


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--database-url``: the database ``kilowatt serve`` would use."""
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML configuration file (as for serve)"
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="sqlite:///FILE or postgresql+asyncpg://USER:PASSWORD@HOST/DB "
        "(default: KILOWATT_DATABASE_URL, the configuration file, else "
        "sqlite:///kilowatt.db in the working directory)",
    )


Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    actions: Subcommands,
    name: str,
    handler: Handler,
    *,
    help: str,
    description: str | None = None,
    json_output: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand with the store options (and ``--json`` for list/show commands)."""
    parser: argparse.ArgumentParser = actions.add_parser(
        name, help=help, description=description or help[:1].upper() + help[1:] + "."
    )
    add_store_options(parser)
    if json_output:
        parser.add_argument(
            "--json", action="store_true", help="print JSON (for scripts) instead of a table"
        )
    parser.set_defaults(handler=handler)
    return parser


def iso_datetime(text: str) -> datetime:
    """argparse type: an ISO 8601 date-time (UTC when no zone is given)."""
    try:
        return parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time; write e.g. 2026-12-31T23:59:59Z"
        ) from None


def id_tag_argument(text: str) -> str:
    """argparse type: an idTag."""
    problem = check_id_tag(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def charge_point_id_argument(text: str) -> str:
    """argparse type: a charge point id the gateway would accept in a connection URL."""
    if not 1 <= len(text) <= MAX_CHARGE_POINT_ID_LENGTH:
        raise argparse.ArgumentTypeError(
            f"a charge point id has 1-{MAX_CHARGE_POINT_ID_LENGTH} characters, "
            f"{text!r} has {len(text)}"
        )
    if not text.isprintable() or text != text.strip() or "/" in text:
        raise argparse.ArgumentTypeError(
            f"charge point id {text!r} must be printable, without '/' or spaces at its ends"
        )
    return text


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def id_tag_status_argument(text: str) -> AuthorizationStatus:
    """argparse type: Accepted, Blocked, Expired or Invalid."""
    status = parse_id_tag_status(text)
    if status is None:
        names = ", ".join(s.value for s in ID_TAG_STATUSES)
        raise argparse.ArgumentTypeError(f"{text!r} is not a status; use one of {names}")
    return status


def generate_password() -> str:
    """A new charge point password (AuthorizationKey): 24 random letters and digits."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


# -------------------------------------------------------------------- running


@dataclass
class Context:
    """What a command handler gets: its arguments, the output, the settings, the store."""

    args: argparse.Namespace
    out: Output
    settings: Settings
    _services: Services | None = field(default=None, repr=False)

    @property
    def database(self) -> str:
        """The database URL, printable (password hidden)."""
        if self._services is not None:
            return self._services.store.url.render_as_string(hide_password=True)
        return _safe_url(self.settings.database_url)

    async def services(self, *, prepare: bool = True) -> Services:
        """Open the store on first use.

        With ``prepare`` the schema is made ready the way ``kilowatt serve`` does:
        SQLite is migrated to the newest revision; PostgreSQL must be current
        already (:class:`SchemaOutOfDate` otherwise: run ``kilowatt db upgrade``).
        """
        if self._services is None:
            self._services = build_services(self.settings)
            if prepare:
                store = self._services.store
                await prepare_database(self._services, migrate=store.dialect == "sqlite")
        return self._services

    async def close(self) -> None:
        services, self._services = self._services, None
        if services is not None:
            await services.store.close()


Handler = Callable[[Context], Awaitable[None]]


def run_command(args: argparse.Namespace, handler: Handler) -> int:
    """Run one management command; return its exit code (0, 1 or 2)."""
    out = Output(sys.stdout, sys.stderr)
    try:
        settings = load_settings(args.config, database_url=args.database_url)
    except ConfigError as exc:
        out.error(str(exc))
        return EXIT_USAGE
    context = Context(args=args, out=out, settings=settings)
    try:
        asyncio.run(_run(context, handler))
    except CommandError as exc:
        out.error(exc.message)
        return exc.code
    except DatabaseUrlError as exc:
        out.error(f"{exc} (--database-url or KILOWATT_DATABASE_URL)")
        return EXIT_USAGE
    except SchemaOutOfDate as exc:
        out.error(str(exc))
        return EXIT_ERROR
    except AlembicCommandError as exc:
        out.error(
            f"cannot migrate the database {context.database}: {exc}. Is it from a newer "
            "Kilowatt? Use that version, or another database (--database-url)."
        )
        return EXIT_ERROR
    except ArgumentError as exc:
        out.error(
            f"invalid database URL: {exc}; use sqlite:///FILE or "
            "postgresql+asyncpg://USER:PASSWORD@HOST/DB (--database-url or KILOWATT_DATABASE_URL)"
        )
        return EXIT_USAGE
    except (SQLAlchemyError, OSError) as exc:
        out.error(
            f"database error on {context.database}: {_reason(exc)}. Check that "
            "the database server runs and that the URL (--database-url, KILOWATT_DATABASE_URL "
            "or database_url in the configuration file) is right."
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_INTERRUPTED
    return 0


async def _run(context: Context, handler: Handler) -> None:
    try:
        await handler(context)
    finally:
        await context.close()


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database"


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    reason = str(original if original is not None else exc).strip()
    first = reason.splitlines()[0] if reason else type(exc).__name__
    return first.rstrip(".")


def confirm(out: Output, question: str) -> bool:
    """Ask a yes/no question on the terminal; False on anything but yes."""
    print(f"{question} [y/N] ", end="", file=out.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        print(file=out.stderr)
    return answer.strip().lower() in {"y", "yes"}


def stdin_is_terminal() -> bool:
    return _isatty(sys.stdin)
