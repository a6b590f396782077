"""/api/v1/id-tags: CRUD, pagination, validation, CSV import and export."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from kilowatt.app import Application
from kilowatt.domain.models import AuthorizationStatus, IdTag
from tests.api.conftest import assert_error, error_fields

URL = "/api/v1/id-tags"
HEADER = "id_tag,status,expiry_date,parent_id_tag,owner,note,max_concurrent_transactions"
CSV = {"Content-Type": "text/csv"}


async def add_tags(app: Application, *tags: str) -> None:
    for tag in tags:
        await app.services.authorization.add(IdTag(tag))


# ----------------------------------------------------------------------- CRUD


async def test_create_with_every_field(admin: httpx.AsyncClient, kilowatt: Application) -> None:
    response = await admin.post(
        URL,
        json={
            "id_tag": "04A2B3C4",
            "status": "Blocked",
            "expiry_date": "2026-12-31T23:59:59+02:00",
            "parent_id_tag": "FLEET-1",
            "owner": "Alice",
            "note": "spare card",
            "max_concurrent_transactions": 3,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "id_tag": "04A2B3C4",
        "status": "Blocked",
        "expiry_date": "2026-12-31T21:59:59Z",
        "parent_id_tag": "FLEET-1",
        "owner": "Alice",
        "note": "spare card",
        "max_concurrent_transactions": 3,
        "created_at": "2026-03-01T09:00:00Z",
    }
    stored = await kilowatt.services.authorization.get("04A2B3C4")
    assert stored is not None
    assert stored.status is AuthorizationStatus.BLOCKED
    assert stored.expiry_date == datetime(2026, 12, 31, 21, 59, 59, tzinfo=UTC)


async def test_create_with_defaults_and_show(admin: httpx.AsyncClient) -> None:
    response = await admin.post(URL, json={"id_tag": "T1"})
    assert response.status_code == 201, response.text
    expected = {
        "id_tag": "T1",
        "status": "Accepted",
        "expiry_date": None,
        "parent_id_tag": None,
        "owner": None,
        "note": None,
        "max_concurrent_transactions": 1,
        "created_at": "2026-03-01T09:00:00Z",
    }
    assert response.json() == expected
    shown = await admin.get(f"{URL}/T1")
    assert shown.status_code == 200
    assert shown.json() == expected


async def test_create_twice_is_a_conflict(admin: httpx.AsyncClient) -> None:
    assert (await admin.post(URL, json={"id_tag": "T1"})).status_code == 201
    error = assert_error(await admin.post(URL, json={"id_tag": "T1"}), 409, "already_exists")
    assert error["message"] == "id tag 'T1' exists already"


CREATE_ERRORS: list[tuple[dict[str, object], str, str]] = [
    ({}, "body.id_tag", "Field required"),
    ({"id_tag": ""}, "body.id_tag", "at least 1 character"),
    ({"id_tag": "X" * 21}, "body.id_tag", "at most 20 characters"),
    ({"id_tag": " T1"}, "body.id_tag", "without spaces at its ends"),
    ({"id_tag": "T1", "status": "Bogus"}, "body.status", "'Accepted', 'Blocked'"),
    ({"id_tag": "T1", "status": "ConcurrentTx"}, "body.status", "'Invalid'"),
    ({"id_tag": "T1", "expiry_date": "2026-12-31T23:59:59"}, "body.expiry_date", "timezone"),
    ({"id_tag": "T1", "expiry_date": "tomorrow"}, "body.expiry_date", "datetime"),
    (
        {"id_tag": "T1", "max_concurrent_transactions": 0},
        "body.max_concurrent_transactions",
        "greater than or equal to 1",
    ),
    ({"id_tag": "T1", "parent_id_tag": "P" * 21}, "body.parent_id_tag", "at most 20 characters"),
    ({"id_tag": "T1", "owner": "o" * 201}, "body.owner", "at most 200 characters"),
    ({"id_tag": "T1", "colour": "red"}, "body.colour", "Extra inputs are not permitted"),
    # What a database could not store is refused before it gets there.
    (
        {"id_tag": "T1", "expiry_date": "9999-12-31T23:59:59-05:00"},
        "body.expiry_date",
        "out of range once converted to UTC",
    ),
    ({"id_tag": "T1", "owner": "a\u0000b"}, "body.owner", "must not contain NUL"),
    ({"id_tag": "T\u00001"}, "body.id_tag", "must be printable"),
    (
        {"id_tag": "T1", "max_concurrent_transactions": 2**31},
        "body.max_concurrent_transactions",
        "less than or equal to 2147483647",
    ),
]


async def test_create_validation_names_the_field(
    admin: httpx.AsyncClient, kilowatt: Application
) -> None:
    for body, field, reason in CREATE_ERRORS:
        error = assert_error(await admin.post(URL, json=body), 422, "validation_error")
        assert error_fields(error) == [field], body
        assert field in error["message"], body
        assert reason in error["details"]["fields"][0]["reason"], body
    assert await kilowatt.services.authorization.list_id_tags() == []


async def test_show_an_unknown_tag_is_404(admin: httpx.AsyncClient) -> None:
    error = assert_error(await admin.get(f"{URL}/NOPE"), 404, "not_found")
    assert error["message"] == "id tag 'NOPE' is not known; add it with POST /api/v1/id-tags"
    for bad in ("A%00B", "X" * 21):
        error = assert_error(await admin.get(f"{URL}/{bad}"), 422, "validation_error")
        assert error_fields(error) == ["path.id_tag"]


async def test_a_tag_with_a_slash_is_addressable(admin: httpx.AsyncClient) -> None:
    assert (await admin.post(URL, json={"id_tag": "A/B"})).status_code == 201
    shown = await admin.get(f"{URL}/A%2FB")
    assert shown.status_code == 200, shown.text
    assert shown.json()["id_tag"] == "A/B"
    assert (await admin.delete(f"{URL}/A%2FB")).status_code == 204


async def test_update_changes_only_the_fields_sent(
    admin: httpx.AsyncClient, kilowatt: Application
) -> None:
    await kilowatt.services.authorization.add(
        IdTag(
            "T1",
            expiry_date=datetime(2026, 6, 1, tzinfo=UTC),
            owner="Alice",
            note="keep me",
        )
    )
    response = await admin.patch(
        f"{URL}/T1",
        json={"status": "Blocked", "expiry_date": None, "max_concurrent_transactions": 2},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "Blocked"
    assert body["expiry_date"] is None
    assert body["max_concurrent_transactions"] == 2
    assert body["owner"] == "Alice"
    assert body["note"] == "keep me"
    stored = await kilowatt.services.authorization.get("T1")
    assert stored is not None
    assert stored.status is AuthorizationStatus.BLOCKED and stored.expiry_date is None

    response = await admin.patch(f"{URL}/T1", json={"owner": None, "parent_id_tag": "FLEET"})
    assert response.status_code == 200
    assert response.json()["owner"] is None
    assert response.json()["parent_id_tag"] == "FLEET"
    assert response.json()["status"] == "Blocked"

    unchanged = await admin.patch(f"{URL}/T1", json={})
    assert unchanged.status_code == 200
    assert unchanged.json() == response.json()


UPDATE_ERRORS: list[tuple[dict[str, object], str]] = [
    ({"status": None}, "body.status"),
    ({"max_concurrent_transactions": None}, "body.max_concurrent_transactions"),
    ({"status": "Expired!"}, "body.status"),
    ({"expiry_date": "2027-01-01T00:00:00"}, "body.expiry_date"),
    ({"id_tag": "T2"}, "body.id_tag"),
]


async def test_update_validation_names_the_field(
    admin: httpx.AsyncClient, kilowatt: Application
) -> None:
    await add_tags(kilowatt, "T1")
    before = await kilowatt.services.authorization.get("T1")
    for body, field in UPDATE_ERRORS:
        error = assert_error(await admin.patch(f"{URL}/T1", json=body), 422, "validation_error")
        assert error_fields(error) == [field], body
    assert await kilowatt.services.authorization.get("T1") == before


async def test_update_an_unknown_tag_is_404(admin: httpx.AsyncClient) -> None:
    assert_error(await admin.patch(f"{URL}/NOPE", json={"status": "Blocked"}), 404, "not_found")
    assert_error(await admin.patch(f"{URL}/NOPE", json={}), 404, "not_found")


async def test_delete(admin: httpx.AsyncClient, kilowatt: Application) -> None:
    await add_tags(kilowatt, "T1", "T2")
    response = await admin.delete(f"{URL}/T1")
    assert response.status_code == 204
    assert response.content == b""
    assert await kilowatt.services.authorization.get("T1") is None
    assert await kilowatt.services.authorization.get("T2") is not None
    assert_error(await admin.delete(f"{URL}/T1"), 404, "not_found")
    assert_error(await admin.get(f"{URL}/T1"), 404, "not_found")


# ------------------------------------------------------------------ listing


async def test_list_pages_in_id_tag_order(reader: httpx.AsyncClient, kilowatt: Application) -> None:
    empty = await reader.get(URL)
    assert empty.status_code == 200
    assert empty.json() == {"items": [], "limit": 100, "offset": 0, "next_offset": None}

    await add_tags(kilowatt, "E", "C", "A", "D", "B")
    first = (await reader.get(URL, params={"limit": 2})).json()
    assert [item["id_tag"] for item in first["items"]] == ["A", "B"]
    assert (first["limit"], first["offset"], first["next_offset"]) == (2, 0, 2)
    second = (await reader.get(URL, params={"limit": 2, "offset": 2})).json()
    assert [item["id_tag"] for item in second["items"]] == ["C", "D"]
    assert second["next_offset"] == 4
    last = (await reader.get(URL, params={"limit": 2, "offset": 4})).json()
    assert [item["id_tag"] for item in last["items"]] == ["E"]
    assert last["next_offset"] is None
    exact = (await reader.get(URL, params={"limit": 5})).json()
    assert len(exact["items"]) == 5 and exact["next_offset"] is None
    beyond = (await reader.get(URL, params={"offset": 10})).json()
    assert beyond["items"] == [] and beyond["next_offset"] is None
    assert exact["items"][0] == {
        "id_tag": "A",
        "status": "Accepted",
        "expiry_date": None,
        "parent_id_tag": None,
        "owner": None,
        "note": None,
        "max_concurrent_transactions": 1,
        "created_at": "2026-03-01T09:00:00Z",
    }


async def test_list_rejects_bad_paging(reader: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, int | str], str]] = [
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
        ({"limit": "many"}, "query.limit"),
        ({"offset": -1}, "query.offset"),
        ({"offset": 10**30}, "query.offset"),
    ]
    for params, field in cases:
        error = assert_error(await reader.get(URL, params=params), 422, "validation_error")
        assert error_fields(error) == [field], params


# ---------------------------------------------------------------------- CSV


async def test_import_then_export_round_trip(
    admin: httpx.AsyncClient, reader: httpx.AsyncClient, kilowatt: Application
) -> None:
    text = (
        f"{HEADER}\r\n"
        'T2,Blocked,2026-12-31T23:59:59Z,FLEET,"Bob, Jr.","said ""hi""",2\r\n'
        "T1,,,,,,\r\n"
        "T3,expired,2027-01-01T00:00:00+01:00,,,,\r\n"
    )
    response = await admin.post(f"{URL}/import", content=text.encode(), headers=CSV)
    assert response.status_code == 200, response.text
    assert response.json() == {"rows": 3, "added": 3, "updated": 0, "skipped": 0}

    t2 = await kilowatt.services.authorization.get("T2")
    assert t2 is not None
    assert t2.status is AuthorizationStatus.BLOCKED
    assert t2.owner == "Bob, Jr." and t2.note == 'said "hi"'
    assert t2.max_concurrent_transactions == 2

    exported = await reader.get(f"{URL}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert exported.headers["content-disposition"] == 'attachment; filename="id-tags.csv"'
    assert exported.text == (
        f"{HEADER}\n"
        "T1,Accepted,,,,,1\n"
        'T2,Blocked,2026-12-31T23:59:59Z,FLEET,"Bob, Jr.","said ""hi""",2\n'
        "T3,Expired,2026-12-31T23:00:00Z,,,,1\n"
    )

    # Again without replace: nothing changes; with replace: every tag is updated.
    again = await admin.post(f"{URL}/import", content=exported.content, headers=CSV)
    assert again.json() == {"rows": 3, "added": 0, "updated": 0, "skipped": 3}
    changed = exported.text.replace("T1,Accepted", "T1,Blocked") + "T4,,,,,,\n"
    replaced = await admin.post(
        f"{URL}/import", content=changed.encode(), headers=CSV, params={"replace": "true"}
    )
    assert replaced.json() == {"rows": 4, "added": 1, "updated": 3, "skipped": 0}
    t1 = await kilowatt.services.authorization.get("T1")
    assert t1 is not None and t1.status is AuthorizationStatus.BLOCKED

    # Into an empty database, the export restores the same tags.
    for tag in ("T1", "T2", "T3", "T4"):
        assert (await admin.delete(f"{URL}/{tag}")).status_code == 204
    restored = await admin.post(f"{URL}/import", content=changed.encode(), headers=CSV)
    assert restored.json() == {"rows": 4, "added": 4, "updated": 0, "skipped": 0}
    final = await reader.get(f"{URL}/export")
    assert final.text == changed.replace("T4,,,,,,", "T4,Accepted,,,,,1")


async def test_import_reports_every_bad_row_and_writes_nothing(
    admin: httpx.AsyncClient, kilowatt: Application
) -> None:
    await add_tags(kilowatt, "KEEP")
    text = (
        f"{HEADER}\n"
        "GOOD,Accepted,,,,,1\n"
        "BAD-STATUS,Sleeping,,,,,1\n"
        "\n"
        "BAD-DATE,,next week,,,,\n"
        "GOOD,,,,,,\n"
        "BAD-MAX,,,,,,0\n"
        "TWENTY-ONE-CHARACTERS,,,,,,\n"
    )
    response = await admin.post(
        f"{URL}/import", content=text.encode(), headers=CSV, params={"replace": "true"}
    )
    error = assert_error(response, 422, "invalid_csv")
    problems = error["details"]["problems"]
    assert [problem["line"] for problem in problems] == [3, 5, 6, 7, 8]
    assert problems[0]["problem"] == (
        "status 'Sleeping' is not Accepted, Blocked, Expired or Invalid"
    )
    assert "expiry_date 'next week' is not an ISO 8601 date-time" in problems[1]["problem"]
    assert problems[2]["problem"] == "id tag 'GOOD' is on line 2 already"
    assert "max_concurrent_transactions '0'" in problems[3]["problem"]
    assert "OCPP 1.6 allows at most 20" in problems[4]["problem"]
    assert error["message"].startswith("nothing was imported: 5 bad row(s)")
    assert "line 3: status 'Sleeping'" in error["message"]
    tags = await kilowatt.services.authorization.list_id_tags()
    assert [tag.id_tag for tag in tags] == ["KEEP"]


async def test_import_of_a_broken_file(admin: httpx.AsyncClient, kilowatt: Application) -> None:
    broken: list[tuple[bytes, int, str]] = [
        (b"", 1, "the file is empty"),
        (b"tag,status\nT1,Accepted\n", 1, "unknown column 'tag'"),
        (b'id_tag\n"T1\n', 2, "not valid CSV"),
        (b"id_tag,note\nT1,ok\nT2,a\x00b\n", 3, "contains a NUL character"),
    ]
    for content, line, problem in broken:
        response = await admin.post(f"{URL}/import", content=content, headers=CSV)
        error = assert_error(response, 422, "invalid_csv")
        assert error["details"]["problems"][0]["line"] == line, content
        assert problem in error["details"]["problems"][0]["problem"], content
    # What the databases cannot store, even where the CSV checks let it through.
    out_of_range: list[tuple[bytes, str]] = [
        (
            b"id_tag,max_concurrent_transactions\nT1,2147483648\n",
            "id tag 'T1': max_concurrent_transactions is more than 2147483647",
        ),
    ]
    for content, message in out_of_range:
        response = await admin.post(f"{URL}/import", content=content, headers=CSV)
        error = assert_error(response, 422, "invalid_csv")
        assert error["details"]["problems"] == [{"line": None, "problem": message}]
    # A date-time that is no instant once in UTC: a problem of its line.
    response = await admin.post(
        f"{URL}/import",
        content=b"id_tag,expiry_date\nT1,9999-12-31T23:59:59-05:00\n",
        headers=CSV,
    )
    error = assert_error(response, 422, "invalid_csv")
    assert error["details"]["problems"] == [
        {
            "line": 2,
            "problem": "expiry_date '9999-12-31T23:59:59-05:00' is beyond the year 9999 in UTC",
        }
    ]
    assert await kilowatt.services.authorization.list_id_tags() == []


async def test_import_needs_utf8_csv(admin: httpx.AsyncClient) -> None:
    latin1 = "id_tag,owner\nT1,Jürgen\n".encode("latin-1")
    error = assert_error(
        await admin.post(f"{URL}/import", content=latin1, headers=CSV), 422, "invalid_csv"
    )
    assert "not UTF-8" in error["message"]

    error = assert_error(
        await admin.post(f"{URL}/import", json={"id_tag": "T1"}), 415, "unsupported_media_type"
    )
    assert "Content-Type: text/csv" in error["message"]
    assert "application/json" in error["message"]


async def test_import_of_a_header_only_file_and_a_bom(
    admin: httpx.AsyncClient, kilowatt: Application
) -> None:
    response = await admin.post(f"{URL}/import", content=f"{HEADER}\n".encode(), headers=CSV)
    assert response.json() == {"rows": 0, "added": 0, "updated": 0, "skipped": 0}
    response = await admin.post(
        f"{URL}/import",
        content="\ufeffid_tag\nT1\n".encode(),
        headers={"Content-Type": "text/csv; charset=utf-8"},
    )
    assert response.json() == {"rows": 1, "added": 1, "updated": 0, "skipped": 0}
    assert await kilowatt.services.authorization.get("T1") is not None


async def test_export_of_no_tags_is_the_header(reader: httpx.AsyncClient) -> None:
    response = await reader.get(f"{URL}/export")
    assert response.status_code == 200
    assert response.text == f"{HEADER}\n"
