"""Schema migrations (Alembic), run by ``kilowatt db upgrade`` and at start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from kilowatt.store.sql.database import SqlStore

__all__ = ["current_revision", "head_revision", "upgrade", "upgrade_connection"]

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(store: SqlStore) -> str | None:
    return await store.run_sync_admin(_current)


async def upgrade(store: SqlStore, revision: str = "head") -> None:
    await store.run_sync_admin(lambda connection: upgrade_connection(connection, revision))
