"""Id tags: list, add, show, update, remove; import and export as CSV.

The CSV format is the one of ``kilowatt id-tag import/export`` (header
``id_tag,status,expiry_date,parent_id_tag,owner,note,max_concurrent_transactions``),
read and written by the same code.
"""

from __future__ import annotations

import io
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AfterValidator

from kilowatt.api.deps import Admin, Context, Reader
from kilowatt.api.errors import ApiError
from kilowatt.api.schemas_common import MAX_INT32, printable
from kilowatt.api.schemas_id_tags import (
    ID_TAG_MAX_LENGTH,
    IdTagCreate,
    IdTagImportResult,
    IdTagPage,
    IdTagPublic,
    IdTagUpdate,
)
from kilowatt.domain.id_tag_csv import CSV_COLUMNS, parse_id_tag_csv, write_id_tag_csv
from kilowatt.domain.models import AuthorizationStatus

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/id-tags", tags=["id tags"])

# The routes use ``{id_tag:path}``: an id tag may contain '/' (sent as %2F).
IdTagPath = Annotated[
    str, Path(min_length=1, max_length=ID_TAG_MAX_LENGTH), AfterValidator(printable)
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
EXPORT_PAGE = 1000
MAX_IMPORT_BYTES = 16 * 1024 * 1024
CSV_MEDIA_TYPES = frozenset({"text/csv", "text/plain"})
_LINE = re.compile(r"^line (\d+): (.*)$", re.DOTALL)

CSV_HEADER = ",".join(CSV_COLUMNS)
CSV_EXAMPLE = f"{CSV_HEADER}\n04A2B3C4D5E6,Accepted,2026-12-31T23:59:59Z,,Alice,,1\n"


def _not_found(id_tag: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"id tag {id_tag!r} is not known; add it with POST /api/v1/id-tags",
    )


@router.get(
    "",
    summary="List id tags, ordered by id tag",
    description="Pages of at most `limit` id tags; `next_offset` is the `offset` of the "
    "next page, null on the last one.",
)
async def list_id_tags(
    ctx: Context,
    token: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> IdTagPage:
    # One more than asked for tells whether there is a next page, without a count.
    tags = await ctx.authorization.list_id_tags(limit=limit + 1, offset=offset)
    more = len(tags) > limit
    return IdTagPage(
        items=[IdTagPublic.of(tag) for tag in tags[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.post("", status_code=201, summary="Add an id tag")
async def add(ctx: Context, token: Admin, body: IdTagCreate) -> IdTagPublic:
    await ctx.authorization.add(body.record())  # AlreadyExists: 409 already_exists
    tag = await ctx.authorization.get(body.id_tag)
    assert tag is not None
    return IdTagPublic.of(tag)


@router.get(
    "/export",
    summary="Export every id tag as CSV",
    description=f"The format `POST /api/v1/id-tags/import` and `kilowatt id-tag import` "
    f"read; header line `{CSV_HEADER}`.",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"example": CSV_EXAMPLE}}}},
)
async def export_csv(ctx: Context, token: Reader) -> Response:
    buffer = io.StringIO(newline="")
    write_id_tag_csv(buffer, await ctx.authorization.list_all_id_tags(page=EXPORT_PAGE))
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="id-tags.csv"'},
    )


@router.post(
    "/import",
    summary="Import id tags from CSV",
    description=f"The body is a CSV file (UTF-8, `Content-Type: text/csv`) with the header "
    f"line `{CSV_HEADER}`; only id_tag is required, empty cells take the defaults (status "
    "Accepted, no expiry, max_concurrent_transactions 1; an expiry without a zone is UTC). "
    "Every row is checked first: if any is bad, the answer is 422 `invalid_csv` listing "
    "every problem with its line number (`details.problems`) and nothing is written. "
    "Id tags that exist already are left unchanged, or updated with `replace=true`; tags "
    "not in the file are never removed. The import is one database transaction.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE}},
        }
    },
)
async def import_csv(
    request: Request,
    ctx: Context,
    token: Admin,
    replace: Annotated[
        bool, Query(description="Update id tags that exist already (default: keep them)")
    ] = False,
) -> IdTagImportResult:

    text = await _csv_text(request)
    if "\x00" in text:
        # What the CSV checks let through would fail in the database (PostgreSQL text).
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise _invalid_csv([f"line {line}: contains a NUL character"])
    tags, problems = parse_id_tag_csv(io.StringIO(text, newline=""))
    problems.extend(
        f"id tag {tag.id_tag!r}: max_concurrent_transactions is more than {MAX_INT32}"
        for tag in tags
        if tag.max_concurrent_transactions > MAX_INT32
    )
    if problems:
        raise _invalid_csv(problems)
    if not tags:
        return IdTagImportResult(rows=0, added=0, updated=0, skipped=0)
    added, updated = await ctx.authorization.import_id_tags(tags, replace=replace)
    return IdTagImportResult(
        rows=len(tags), added=added, updated=updated, skipped=len(tags) - added - updated
    )


async def _csv_text(request: Request) -> str:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in CSV_MEDIA_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be a CSV file sent with 'Content-Type: text/csv' "
            f"(got {media_type or 'no content type'!r})",
        )
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise ApiError(
                413,
                "too_large",
                f"the CSV file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB; "
                "split it and import the parts one after the other",
            )
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(
            422,
            "invalid_csv",
            'the CSV file is not UTF-8 text; save it as UTF-8 ("CSV UTF-8") and import it again',
            {"problems": [{"line": None, "problem": f"not UTF-8: {exc.reason}"}]},
        ) from None


def _invalid_csv(problems: list[str]) -> ApiError:
    rows: list[dict[str, Any]] = []
    for problem in problems:
        match = _LINE.match(problem)
        if match is None:
            rows.append({"line": None, "problem": problem})
        else:
            rows.append({"line": int(match.group(1)), "problem": match.group(2)})
    shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
    return ApiError(
        422,
        "invalid_csv",
        f"nothing was imported: {len(problems)} bad row(s), fix them and import again: {shown}",
        {"problems": rows},
    )


@router.get("/{id_tag:path}", summary="Show an id tag")
async def show(ctx: Context, token: Reader, id_tag: IdTagPath) -> IdTagPublic:
    tag = await ctx.authorization.get(id_tag)
    if tag is None:
        raise _not_found(id_tag)
    return IdTagPublic.of(tag)


@router.patch(
    "/{id_tag:path}",
    summary="Change an id tag",
    description="Only the fields sent change; null clears expiry_date, parent_id_tag, owner "
    "and note (status and max_concurrent_transactions cannot be null).",
)
async def update(ctx: Context, token: Admin, id_tag: IdTagPath, body: IdTagUpdate) -> IdTagPublic:
    fields = body.model_dump(exclude_unset=True)
    if "status" in fields:
        fields["status"] = AuthorizationStatus(fields["status"])
    if fields and not await ctx.authorization.update(id_tag, **fields):
        raise _not_found(id_tag)
    return await show(ctx, token, id_tag)


@router.delete(
    "/{id_tag:path}", status_code=204, summary="Remove an id tag (its transactions are kept)"
)
async def delete(ctx: Context, token: Admin, id_tag: IdTagPath) -> Response:
    if not await ctx.authorization.remove(id_tag):
        raise _not_found(id_tag)
    return Response(status_code=204)
