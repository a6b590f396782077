"""Authorization of id tags (Authorize and the idTagInfo of Start/StopTransaction)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from kilowatt.clock import Clock
from kilowatt.domain.authorization import decide
from kilowatt.domain.models import IdTag, IdTagInfo
from kilowatt.store.base import Repositories, Store

__all__ = ["AuthorizationService", "authorize_in"]


def authorize_in(repos: Repositories, id_tag: str, now: datetime) -> IdTagInfo:
    """The authorization rule inside a unit of work (shared with StartTransaction)."""
    tag, active = repos.id_tags.get_with_active_count(id_tag)
    return decide(tag, now=now, active_transactions=active)


class AuthorizationService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def authorize(self, id_tag: str) -> IdTagInfo:
        """OCPP 1.6 §4.1 Authorize."""
        now = self._clock.now()
        return await self._store.read_now(lambda repos: authorize_in(repos, id_tag, now))

    # -------------------------------------------------------- management

    async def add(self, tag: IdTag) -> None:
        now = self._clock.now()
        await self._store.write(lambda repos: repos.id_tags.add(tag, now))

    async def import_id_tags(
        self, tags: Iterable[IdTag], *, replace: bool = False
    ) -> tuple[int, int]:
        """Import tags in one unit of work; existing ones are updated when ``replace``.
        Returns (added, updated) as counted in that unit of work."""
        now = self._clock.now()
        items = list(tags)

        def work(repos: Repositories) -> tuple[int, int]:
            added = updated = 0
            for tag in items:
                if repos.id_tags.get(tag.id_tag) is None:
                    repos.id_tags.add(tag, now)
                    added += 1
                elif replace:
                    repos.id_tags.update(
                        tag.id_tag,
                        now,
                        status=tag.status,
                        expiry_date=tag.expiry_date,
                        parent_id_tag=tag.parent_id_tag,
                        owner=tag.owner,
                        note=tag.note,
                        max_concurrent_transactions=tag.max_concurrent_transactions,
                    )
                    updated += 1
            return added, updated

        return await self._store.write_alone(work)

    async def list_all_id_tags(self, *, page: int = 1000) -> list[IdTag]:
        """Every id tag, read ``page`` at a time (exports)."""
        tags: list[IdTag] = []
        while True:
            found = await self.list_id_tags(limit=page, offset=len(tags))
            tags.extend(found)
            if len(found) < page:
                return tags

    async def get(self, id_tag: str) -> IdTag | None:
        return await self._store.read(lambda repos: repos.id_tags.get(id_tag))

    async def list_id_tags(self, *, limit: int = 1000, offset: int = 0) -> list[IdTag]:
        return await self._store.read(
            lambda repos: repos.id_tags.list_id_tags(limit=limit, offset=offset)
        )

    async def update(self, id_tag: str, **fields: object) -> bool:
        now = self._clock.now()
        return await self._store.write(lambda repos: repos.id_tags.update(id_tag, now, **fields))

    async def remove(self, id_tag: str) -> bool:
        return await self._store.write(lambda repos: repos.id_tags.remove(id_tag))
