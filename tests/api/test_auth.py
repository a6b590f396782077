"""Bearer tokens on the id tag, transaction and status history routes.

Every route is tried in one test per rule (one app per engine, not one per route).
"""

from __future__ import annotations

import httpx

from kilowatt.app import Application
from tests.api.conftest import Client, assert_error

READ_ROUTES = [
    "/api/v1/id-tags",
    "/api/v1/id-tags/T1",
    "/api/v1/id-tags/export",
    "/api/v1/transactions",
    "/api/v1/transactions/1",
    "/api/v1/transactions/export",
    "/api/v1/transactions/unknown-stops",
    "/api/v1/charge-points/CP1/status-history",
]

WRITE_ROUTES = [
    ("POST", "/api/v1/id-tags"),
    ("PATCH", "/api/v1/id-tags/T1"),
    ("DELETE", "/api/v1/id-tags/T1"),
    ("POST", "/api/v1/id-tags/import"),
]


async def write(http: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    """A valid request of that route (as far as the body goes)."""
    if path.endswith("/import"):
        return await http.post(path, content=b"id_tag\nT9\n", headers={"Content-Type": "text/csv"})
    if method == "DELETE":
        return await http.delete(path)
    body = {"id_tag": "T9"} if method == "POST" else {"status": "Blocked"}
    return await http.request(method, path, json=body)


def assert_unauthorized(response: httpx.Response) -> str:
    error = assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    message: str = error["message"]
    return message


async def test_every_route_needs_a_token(client: Client) -> None:
    async with client(None) as anonymous:
        for path in READ_ROUTES:
            message = assert_unauthorized(await anonymous.get(path))
            assert "missing bearer token" in message, path
            assert "kilowatt api-token create" in message, path
        for method, path in WRITE_ROUTES:
            message = assert_unauthorized(await write(anonymous, method, path))
            assert "missing bearer token" in message, (method, path)


async def test_a_wrong_token_is_refused_everywhere(client: Client) -> None:
    async with client("kw_not-a-token") as stranger:
        for path in READ_ROUTES:
            assert assert_unauthorized(await stranger.get(path)) == "invalid or revoked API token"
        for method, path in WRITE_ROUTES:
            message = assert_unauthorized(await write(stranger, method, path))
            assert message == "invalid or revoked API token"


async def test_a_basic_auth_header_is_not_a_bearer_token(client: Client) -> None:
    async with client(None) as http:
        response = await http.get(
            "/api/v1/id-tags", headers={"Authorization": "Basic dXNlcjpwYXNz"}
        )
    assert "missing bearer token" in assert_unauthorized(response)


async def test_a_revoked_token_stops_working_at_once(
    kilowatt: Application, client: Client, read_token: str
) -> None:
    async with client(read_token) as http:
        assert (await http.get("/api/v1/id-tags")).status_code == 200
        assert await kilowatt.services.tokens.revoke("dashboard")
        message = assert_unauthorized(await http.get("/api/v1/id-tags"))
    assert message == "invalid or revoked API token"


async def test_a_read_token_may_read_but_not_write(
    kilowatt: Application, reader: httpx.AsyncClient
) -> None:
    await kilowatt.services.charge_points.register("CP1")
    for path in READ_ROUTES:
        response = await reader.get(path)
        if path.endswith(("/T1", "/1")):
            assert_error(response, 404, "not_found")  # past authorization: nothing there
        else:
            assert response.status_code == 200, (path, response.text)
    for method, path in WRITE_ROUTES:
        error = assert_error(await write(reader, method, path), 403, "forbidden")
        assert error["message"] == (
            f"the token 'dashboard' is read-only; {method} needs an admin token"
        )
    assert await kilowatt.services.authorization.list_id_tags() == []


async def test_an_admin_token_may_write(kilowatt: Application, admin: httpx.AsyncClient) -> None:
    for method, path in WRITE_ROUTES:
        response = await write(admin, method, path)
        assert response.status_code in (200, 201, 404), (method, path, response.text)
    # POST added T9, PATCH and DELETE of T1 found nothing, the import skipped T9.
    assert [tag.id_tag for tag in await kilowatt.services.authorization.list_id_tags()] == ["T9"]


async def test_the_openapi_document_describes_the_routes(client: Client) -> None:
    async with client(None) as http:
        response = await http.get("/api/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/id-tags",
        "/api/v1/id-tags/export",
        "/api/v1/id-tags/import",
        "/api/v1/id-tags/{id_tag}",
        "/api/v1/transactions",
        "/api/v1/transactions/export",
        "/api/v1/transactions/unknown-stops",
        "/api/v1/transactions/{transaction_id}",
        "/api/v1/charge-points/{charge_point_id}/status-history",
    ):
        assert path in paths, sorted(paths)
    assert set(paths["/api/v1/id-tags/{id_tag}"]) == {"get", "patch", "delete"}
    import_body = paths["/api/v1/id-tags/import"]["post"]["requestBody"]
    assert list(import_body["content"]) == ["text/csv"]
    assert "text/csv" in paths["/api/v1/transactions/export"]["get"]["responses"]["200"]["content"]
    statuses = response.json()["components"]["schemas"]["IdTagCreate"]["properties"]["status"]
    assert statuses["enum"] == ["Accepted", "Blocked", "Expired", "Invalid"]
