"""Validated building blocks of the API models and parameters.

What the databases cannot store is refused here, as a 422 naming the field, rather
than failing in the database: NUL characters (PostgreSQL text), instants outside
the years 1-9999 in UTC, integers beyond a 32-bit column.

Use the text checks after the length constraints, e.g. ``Annotated[str,
Field(max_length=20), AfterValidator(printable)]``: placed before them, pydantic
words its length errors for sequences ("items").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

__all__ = ["MAX_INT32", "UtcDateTime", "printable", "storable"]

MAX_INT32 = 2_147_483_647


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def storable(value: str) -> str:
    """Free text: any characters but NUL."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def printable(value: str) -> str:
    """An identifier: printable, no spaces at its ends (the rule of the command line)."""
    if not value.isprintable() or value != value.strip():
        raise ValueError("must be printable, without spaces at its ends")
    return value


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_utc)]
"""An ISO 8601 date-time with a time zone, converted to UTC."""
