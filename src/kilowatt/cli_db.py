"""``kilowatt db``: the database schema (Alembic migrations)."""

from __future__ import annotations

from pathlib import Path

from kilowatt.cli_common import Context, Subcommands, add_command
from kilowatt.store.sql.database import normalize_url
from kilowatt.store.sql.migrate import current_revision, head_revision, upgrade

__all__ = ["add_db_commands"]


def add_db_commands(commands: Subcommands) -> None:
    db = commands.add_parser(
        "db",
        help="database schema: upgrade, current revision",
        description="Manage the database schema. SQLite databases are upgraded "
        "automatically; PostgreSQL needs `kilowatt db upgrade` after installing a new "
        "Kilowatt, before `kilowatt serve`.",
    )
    actions = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_command(
        actions,
        "upgrade",
        db_upgrade,
        help="migrate the schema to the newest revision",
        description="Migrate the database schema to the newest revision (creates it in "
        "an empty database) and print the revision before and after.",
    )
    add_command(
        actions,
        "current",
        db_current,
        help="show the schema revision of the database and the newest one",
    )


def _revision(revision: str | None) -> str:
    return revision if revision is not None else "none (empty database)"


async def db_upgrade(context: Context) -> None:
    services = await context.services(prepare=False)
    out = context.out
    before = await current_revision(services.store)
    head = head_revision()
    out.line(f"database: {context.database}")
    out.line(f"revision before: {_revision(before)}")
    if before != head:
        await upgrade(services.store)
    after = await current_revision(services.store)
    out.line(f"revision after:  {_revision(after)}")
    out.line("already up to date" if before == after else "upgraded")


async def db_current(context: Context) -> None:
    out = context.out
    head = head_revision()
    missing = _missing_sqlite_file(context.settings.database_url)
    if missing is not None:
        out.line(f"database: {context.settings.database_url}")
        out.line(f"current revision: none (no database file {missing} yet)")
        out.line(f"head revision:    {head}")
        out.line("`kilowatt db upgrade` or `kilowatt serve` creates it")
        return
    services = await context.services(prepare=False)
    current = await current_revision(services.store)
    out.line(f"database: {context.database}")
    out.line(f"current revision: {_revision(current)}")
    out.line(f"head revision:    {head}")
    if current == head:
        out.line("up to date")
    else:
        out.line("out of date: run `kilowatt db upgrade` with the same database URL")


def _missing_sqlite_file(database_url: str) -> Path | None:
    """The SQLite file the URL names, when it does not exist (it is not created here)."""
    url = normalize_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    path = Path(url.database)
    return None if path.exists() else path
