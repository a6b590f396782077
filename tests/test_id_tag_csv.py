"""The id tag CSV format shared by ``kilowatt id-tag import/export`` and the API."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from kilowatt.domain.id_tag_csv import CSV_COLUMNS, parse_id_tag_csv, write_id_tag_csv
from kilowatt.domain.models import AuthorizationStatus, IdTag


def test_an_expiry_beyond_year_9999_in_utc_is_a_problem_not_a_crash() -> None:
    text = "id_tag,expiry_date\nA,9999-12-31T23:59:59-14:00\nB,2026-01-01T00:00:00Z\n"
    tags, problems = parse_id_tag_csv(io.StringIO(text))
    assert problems == [
        "line 2: expiry_date '9999-12-31T23:59:59-14:00' is beyond the year 9999 in UTC"
    ]
    assert [tag.id_tag for tag in tags] == ["B"]


def test_what_is_written_reads_back_the_same() -> None:
    tags = [
        IdTag(
            "TAG-1",
            AuthorizationStatus.BLOCKED,
            expiry_date=datetime(2027, 5, 1, 12, 30, 0, 250000, tzinfo=UTC),
            parent_id_tag="GROUP",
            owner="Fleet, Inc.",
            note='says "hi"',
            max_concurrent_transactions=3,
        ),
        IdTag("TAG-2"),
    ]
    out = io.StringIO()
    write_id_tag_csv(out, tags)
    assert out.getvalue().splitlines()[0] == ",".join(CSV_COLUMNS)
    read, problems = parse_id_tag_csv(io.StringIO(out.getvalue()))
    assert problems == []
    assert read == tags
