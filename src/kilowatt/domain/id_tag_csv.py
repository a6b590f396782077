"""Id tags as CSV: the one format of ``kilowatt id-tag import/export`` and the API.

Columns (a header line first, any order, only ``id_tag`` required):
``id_tag,status,expiry_date,parent_id_tag,owner,note,max_concurrent_transactions``.
Parsing reports every problem of a file at once (``line N: …``), so that an operator
fixes them in one go; a file with any problem imports nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from kilowatt.domain.models import AuthorizationStatus, IdTag
from kilowatt.domain.timestamps import parse_timestamp, utc_text

__all__ = [
    "CSV_COLUMNS",
    "ID_TAG_MAX_LENGTH",
    "ID_TAG_STATUSES",
    "OWNER_MAX_LENGTH",
    "check_id_tag",
    "parse_id_tag_csv",
    "parse_id_tag_status",
    "write_id_tag_csv",
]

CSV_COLUMNS = (
    "id_tag",
    "status",
    "expiry_date",
    "parent_id_tag",
    "owner",
    "note",
    "max_concurrent_transactions",
)
ID_TAG_MAX_LENGTH = 20  # CiString20Type
OWNER_MAX_LENGTH = 200  # the id_tags.owner column


def check_id_tag(text: str) -> str | None:
    """Why ``text`` cannot be an idTag (CiString20Type), or None when it can."""
    if not text:
        return "an id tag must not be empty"
    if len(text) > ID_TAG_MAX_LENGTH:
        return (
            f"id tag {text!r} has {len(text)} characters; OCPP 1.6 allows at most "
            f"{ID_TAG_MAX_LENGTH} (CiString20Type)"
        )
    if not text.isprintable() or text != text.strip():
        return f"id tag {text!r} contains spaces at its ends or non-printable characters"
    return None


ID_TAG_STATUSES = (
    AuthorizationStatus.ACCEPTED,
    AuthorizationStatus.BLOCKED,
    AuthorizationStatus.EXPIRED,
    AuthorizationStatus.INVALID,
)


def parse_id_tag_status(text: str) -> AuthorizationStatus | None:
    """The stored status named by ``text`` (any letter case), or None."""
    for status in ID_TAG_STATUSES:
        if text.lower() == status.value.lower():
            return status
    return None


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    cells: list[str]


def _rows(stream: Iterable[str]) -> Iterable[_Row]:
    reader = csv.reader(stream, strict=True)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _CsvBroken(line, str(exc)) from None
        if any(value.strip() for value in cells):
            yield _Row(line, cells)
        line = reader.line_num + 1


class _CsvBroken(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def parse_id_tag_csv(stream: TextIO) -> tuple[list[IdTag], list[str]]:
    """Every id tag of a CSV file, and every problem found (``line N: ...``).

    The tags are only usable when there is no problem.
    """
    problems: list[str] = []
    tags: list[IdTag] = []
    rows = iter(_rows(stream))
    try:
        header = next(rows, None)
        if header is None:
            return [], [
                f"line 1: the file is empty; it needs the header line {','.join(CSV_COLUMNS)}"
            ]
        columns = [value.strip().lower() for value in header.cells]
        header_problems = _check_header(columns)
        if header_problems:
            return [], [f"line {header.line}: {problem}" for problem in header_problems]
        first_line: dict[str, int] = {}
        for row in rows:
            tag_id, tag, row_problems = _parse_row(columns, row)
            if tag_id is not None:
                seen = first_line.get(tag_id)
                if seen is not None:
                    row_problems.append(f"id tag {tag_id!r} is on line {seen} already")
                else:
                    first_line[tag_id] = row.line
            if row_problems:
                problems.append(f"line {row.line}: " + "; ".join(row_problems))
            elif tag is not None:
                tags.append(tag)
    except _CsvBroken as exc:
        problems.append(f"line {exc.line}: not valid CSV ({exc.reason}); nothing after it was read")
    return tags, problems


def _check_header(columns: list[str]) -> list[str]:
    problems = []
    known = ", ".join(CSV_COLUMNS)
    for column in columns:
        if column not in CSV_COLUMNS:
            problems.append(f"unknown column {column!r} (the columns are {known})")
    duplicates = sorted({column for column in columns if columns.count(column) > 1})
    problems.extend(f"column {column!r} appears more than once" for column in duplicates)
    if "id_tag" not in columns:
        problems.append(
            f"no id_tag column: the first line must be a header such as {','.join(CSV_COLUMNS)}"
        )
    return problems


def _parse_row(columns: list[str], row: _Row) -> tuple[str | None, IdTag | None, list[str]]:
    """The row's id tag (when it is a valid one), its IdTag (when all is valid), problems."""
    problems: list[str] = []
    if len(row.cells) > len(columns):
        problems.append(f"{len(row.cells)} fields but the header has {len(columns)}")
    values = {column: value.strip() for column, value in zip(columns, row.cells, strict=False)}
    tag_id = values.get("id_tag", "")
    problem = check_id_tag(tag_id)
    if problem is not None:
        problems.append(problem if tag_id else "id_tag is empty")

    status = AuthorizationStatus.ACCEPTED
    if values.get("status"):
        parsed = parse_id_tag_status(values["status"])
        if parsed is None:
            problems.append(
                f"status {values['status']!r} is not Accepted, Blocked, Expired or Invalid"
            )
        else:
            status = parsed

    expiry: datetime | None = None
    if values.get("expiry_date"):
        try:
            expiry = parse_timestamp(values["expiry_date"])
        except ValueError:
            problems.append(
                f"expiry_date {values['expiry_date']!r} is not an ISO 8601 date-time "
                "(e.g. 2026-12-31T23:59:59Z)"
            )
        except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is in the year 10000 in UTC
            problems.append(f"expiry_date {values['expiry_date']!r} is beyond the year 9999 in UTC")

    parent = values.get("parent_id_tag") or None
    if parent is not None:
        parent_problem = check_id_tag(parent)
        if parent_problem is not None:
            problems.append(f"parent_id_tag: {parent_problem}")

    owner = values.get("owner") or None
    if owner is not None and len(owner) > OWNER_MAX_LENGTH:
        problems.append(f"owner is longer than {OWNER_MAX_LENGTH} characters")

    maximum = 1
    if values.get("max_concurrent_transactions"):
        text = values["max_concurrent_transactions"]
        try:
            maximum = int(text)
        except ValueError:
            maximum = 0
        if maximum < 1:
            problems.append(
                f"max_concurrent_transactions {text!r} is not a whole number of 1 or more"
            )

    valid_id = tag_id if problem is None else None
    if problems:
        return valid_id, None, problems
    return (
        valid_id,
        IdTag(
            id_tag=tag_id,
            status=status,
            expiry_date=expiry,
            parent_id_tag=parent,
            owner=owner,
            note=values.get("note") or None,
            max_concurrent_transactions=maximum,
        ),
        problems,
    )


def write_id_tag_csv(stream: TextIO, tags: Iterable[IdTag]) -> None:
    """``tags`` as CSV, header first, in the columns :func:`parse_id_tag_csv` reads."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for tag in tags:
        writer.writerow(
            (
                tag.id_tag,
                tag.status.value,
                utc_text(tag.expiry_date) or "",
                tag.parent_id_tag or "",
                tag.owner or "",
                tag.note or "",
                tag.max_concurrent_transactions,
            )
        )
