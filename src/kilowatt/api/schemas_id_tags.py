"""API representations of id tags (create, update, public, page, import result)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from kilowatt.api.schemas_common import MAX_INT32, UtcDateTime, printable, storable
from kilowatt.domain.models import AuthorizationStatus, IdTag

__all__ = [
    "ID_TAG_MAX_LENGTH",
    "IdTagCreate",
    "IdTagImportResult",
    "IdTagPage",
    "IdTagPublic",
    "IdTagStatus",
    "IdTagText",
    "IdTagUpdate",
]

# OCPP 1.6 idToken: CiString20Type.
ID_TAG_MAX_LENGTH = 20
OWNER_MAX_LENGTH = 200  # the id_tags.owner column
NOTE_MAX_LENGTH = 2000

IdTagStatus = Literal["Accepted", "Blocked", "Expired", "Invalid"]
"""The statuses an id tag is stored with (ConcurrentTx is only ever computed)."""


IdTagText = Annotated[
    str,
    Field(min_length=1, max_length=ID_TAG_MAX_LENGTH, examples=["04A2B3C4D5E6"]),
    AfterValidator(printable),
]
OwnerText = Annotated[str, Field(max_length=OWNER_MAX_LENGTH), AfterValidator(storable)]
NoteText = Annotated[str, Field(max_length=NOTE_MAX_LENGTH), AfterValidator(storable)]


class IdTagCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id_tag: IdTagText
    status: IdTagStatus = "Accepted"
    expiry_date: UtcDateTime | None = Field(
        None, description="ISO 8601 with a time zone, e.g. 2026-12-31T23:59:59Z"
    )
    parent_id_tag: IdTagText | None = None
    owner: OwnerText | None = None
    note: NoteText | None = None
    max_concurrent_transactions: int = Field(
        1, ge=1, le=MAX_INT32, description="Transactions it may run at once"
    )

    def record(self) -> IdTag:
        return IdTag(
            id_tag=self.id_tag,
            status=AuthorizationStatus(self.status),
            expiry_date=self.expiry_date,
            parent_id_tag=self.parent_id_tag,
            owner=self.owner,
            note=self.note,
            max_concurrent_transactions=self.max_concurrent_transactions,
        )


class IdTagUpdate(BaseModel):
    """Only the fields sent change; null clears expiry_date, parent_id_tag, owner, note."""

    model_config = ConfigDict(extra="forbid")

    status: IdTagStatus | None = None
    expiry_date: UtcDateTime | None = None
    parent_id_tag: IdTagText | None = None
    owner: OwnerText | None = None
    note: NoteText | None = None
    max_concurrent_transactions: int | None = Field(None, ge=1, le=MAX_INT32)

    @field_validator("status", "max_concurrent_transactions")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only for values sent: leaving the field out is fine, null is not.
        if value is None:
            raise ValueError("may be left out but not null")
        return value


class IdTagPublic(BaseModel):
    id_tag: str
    status: str
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None
    owner: str | None = None
    note: str | None = None
    max_concurrent_transactions: int
    created_at: datetime | None = None

    @classmethod
    def of(cls, tag: IdTag) -> IdTagPublic:
        return cls(
            id_tag=tag.id_tag,
            status=tag.status.value,
            expiry_date=tag.expiry_date,
            parent_id_tag=tag.parent_id_tag,
            owner=tag.owner,
            note=tag.note,
            max_concurrent_transactions=tag.max_concurrent_transactions,
            created_at=tag.created_at,
        )


class IdTagPage(BaseModel):
    """One page of id tags, ordered by id_tag."""

    items: list[IdTagPublic]
    limit: int
    offset: int
    next_offset: int | None = Field(
        description="The offset of the next page, or null when this is the last one"
    )


class IdTagImportResult(BaseModel):
    rows: int = Field(description="Id tags in the file")
    added: int
    updated: int
    skipped: int = Field(description="Existing id tags left unchanged (replace=false)")
