"""Bearer tokens of the operator API: created once, shown once, stored as digests."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from kilowatt.clock import Clock
from kilowatt.domain.models import ApiToken
from kilowatt.store.base import Store

__all__ = ["ApiTokenService", "Role"]

TOKEN_PREFIX = "kw_"


class Role(StrEnum):
    ADMIN = "admin"  # everything, including remote control of charge points
    READ = "read"  # GET requests only


def _digest(token: str) -> str:
    # Tokens are 256-bit random: a plain SHA-256 is enough (no dictionary to slow down).
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokenService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, name: str, role: Role) -> tuple[ApiToken, str]:
        """Create a token; return its record and the secret (shown only now)."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(secret)
        now = self._clock.now()
        record = await self._store.write(
            lambda repos: repos.api_tokens.add(name, digest, role.value, now)
        )
        return record, secret

    async def verify(self, secret: str) -> ApiToken | None:
        """The live token for this secret, or None (unknown or revoked)."""
        digest = _digest(secret)
        token = await self._store.read(lambda repos: repos.api_tokens.get_by_hash(digest))
        if token is None or token.revoked_at is not None:
            return None
        return token

    async def list_api_tokens(self) -> list[ApiToken]:
        return await self._store.read(lambda repos: repos.api_tokens.list_api_tokens())

    async def revoke(self, name: str) -> bool:
        now = self._clock.now()
        return await self._store.write(lambda repos: repos.api_tokens.revoke(name, now))
