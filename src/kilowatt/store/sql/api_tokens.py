"""SQL for API tokens (stored as SHA-256 digests, never in clear)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from kilowatt.domain.models import ApiToken
from kilowatt.store.base import AlreadyExists
from kilowatt.store.sql import tables as t

__all__ = ["SqlApiTokens"]


def _token(row: object) -> ApiToken:
    m = row._mapping  # type: ignore[attr-defined]
    return ApiToken(
        id=m["id"],
        name=m["name"],
        role=m["role"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


class SqlApiTokens:
    __slots__ = ("_c",)

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, name: str, token_hash: str, role: str, now: datetime) -> ApiToken:
        try:
            with self._c.begin_nested():
                # Read the RETURNING row inside the savepoint: SQLite cannot release a
                # savepoint while a statement still has rows to give.
                token_id = self._c.execute(
                    insert(t.api_tokens)
                    .values(name=name, token_hash=token_hash, role=role, created_at=now)
                    .returning(t.api_tokens.c.id)
                ).scalar_one()
        except IntegrityError:
            raise AlreadyExists(f"an API token named {name!r} exists already") from None
        return ApiToken(id=int(token_id), name=name, role=role, created_at=now)

    def get_by_hash(self, token_hash: str) -> ApiToken | None:
        row = self._c.execute(
            select(t.api_tokens).where(t.api_tokens.c.token_hash == token_hash)
        ).first()
        return None if row is None else _token(row)

    def list_api_tokens(self) -> list[ApiToken]:
        rows = self._c.execute(select(t.api_tokens).order_by(t.api_tokens.c.id))
        return [_token(row) for row in rows]

    def revoke(self, name: str, now: datetime) -> bool:
        result = self._c.execute(
            update(t.api_tokens)
            .where(t.api_tokens.c.name == name, t.api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(result.rowcount)
