"""The command line's HTTP client for the API of a running `kilowatt serve`.

Commands that make a charge point do something (`kilowatt call`, `kilowatt config
set|apply|refresh`) go through the server that holds the charge point's socket; the
standard library's client is enough, and needs nothing installed.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode, urlsplit

from kilowatt.cli_common import EXIT_ERROR, EXIT_USAGE, CommandError, Output

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_URL",
    "MAX_CALL_TIMEOUT",
    "READ_MARGIN",
    "TOKEN_ENV",
    "api_request",
    "api_target",
]

TOKEN_ENV = "KILOWATT_API_TOKEN"
DEFAULT_URL = "http://127.0.0.1:9000"
MAX_CALL_TIMEOUT = 300.0  # what the API accepts
CONNECT_TIMEOUT = 10.0
# The server answers within the call timeout; allow for the rest of the round trip.
READ_MARGIN = 10.0


def api_target(url: str, token: str | None, out: Output) -> tuple[str, str] | int:
    """The API's base URL and the token (``--token``, else the environment) checked,
    or the exit code of a usage error, said on ``out``."""
    token = (token or os.environ.get(TOKEN_ENV, "")).strip()
    if not token:
        out.error(
            f"no API token: pass --token TOKEN or set {TOKEN_ENV} (create an admin token "
            "with `kilowatt api-token create NAME`)"
        )
        return EXIT_USAGE
    if not token.isascii() or not token.isprintable():
        out.error(f"the API token is not one Kilowatt made ({TOKEN_ENV} or --token)")
        return EXIT_USAGE
    base = url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        out.error(f"--url {url!r} is not an http:// or https:// URL, e.g. {DEFAULT_URL}")
        return EXIT_USAGE
    return base, token


def api_request(
    method: str,
    base: str,
    path: str,
    token: str,
    *,
    body: Any = None,
    params: dict[str, Any] | None = None,
    wait: float = MAX_CALL_TIMEOUT + READ_MARGIN,
) -> Any:
    """One request to the Kilowatt API; the decoded JSON answer, or CommandError with
    the API's own message."""
    url = f"{base}{path}"
    if params:
        url += "?" + urlencode(params, doseq=True)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    # Never a proxy from the environment: the API is usually on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=max(wait, CONNECT_TIMEOUT)) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        raise CommandError(_api_error(base, exc.code, raw), code=EXIT_ERROR) from None
    except TimeoutError:
        raise CommandError(
            f"no answer from {base} within {wait:g} seconds; is it a Kilowatt server? pass "
            "--url with the address `kilowatt serve` serves on"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(
            f"cannot reach the Kilowatt API at {base} ({reason}): is `kilowatt serve` "
            "running? pass --url with the address it serves on"
        ) from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise CommandError(
            f"{base} answered something that is not JSON; is it a Kilowatt server?"
        ) from None


def _api_error(base: str, status: int, raw: bytes) -> str:
    try:
        error = json.loads(raw)["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return (
            f"{base} answered HTTP {status} without a Kilowatt error; is it a Kilowatt "
            "server? pass --url with the address `kilowatt serve` serves on"
        )
    if error.get("code") == "unauthorized":
        message += f" (pass an admin token with --token or {TOKEN_ENV})"
    return message
