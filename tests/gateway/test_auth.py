"""Tests for kilowatt.gateway.auth (upgrade request authentication)."""

from __future__ import annotations

import ast
import base64
import ssl
import sys
from typing import Any

import pytest

from kilowatt.gateway import auth, tls
from kilowatt.gateway.auth import (
    ChargePointCredentials,
    CredentialStore,
    HandshakeRejected,
    InMemoryCredentialStore,
    authenticate,
    charge_point_id_from_path,
    hash_password,
    parse_basic_auth,
    parse_subprotocol_header,
    peer_common_name,
    select_subprotocol,
    verify_password,
)

CP = "CP-001"
PASSWORD = "0123456789abcdef0123"  # AuthorizationKey-style, 20 characters


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# One hash for the whole module: scrypt is deliberately not free.
STORED = hash_password(PASSWORD)


# --------------------------------------------------------------------------
# charge_point_id_from_path
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ocpp/CP1", "CP1"),
        ("/ocpp/CP%2001", "CP 01"),
        ("/ocpp/CP1?foo=bar", "CP1"),
        ("/ocpp/CP1?", "CP1"),
        ("/ocpp/site-a/CP1", "CP1"),  # last segment
        ("/ocpp/%C3%A9t%C3%A9", "été"),  # UTF-8 percent-decoding
        ("/ocpp/CP%2520", "CP%20"),  # decoded exactly once
        ("/ocpp/100%", "100%"),  # stray % is not an escape: kept literally
        ("/ocpp/" + "x" * 48, "x" * 48),
        ("/ocpp/a", "a"),
        ("/ocpp/CP:01@site", "CP:01@site"),
    ],
)
def test_charge_point_id_accepted(path: str, expected: str) -> None:
    assert charge_point_id_from_path(path) == expected


@pytest.mark.parametrize("prefix", ["/ocpp/", "/ocpp", "ocpp", "ocpp/"])
def test_prefix_with_or_without_slashes(prefix: str) -> None:
    assert charge_point_id_from_path("/ocpp/CP1", prefix) == "CP1"
    with pytest.raises(HandshakeRejected) as info:
        charge_point_id_from_path("/ocppx/CP1", prefix)
    assert info.value.status == 404


def test_nested_and_root_prefix() -> None:
    assert charge_point_id_from_path("/api/ocpp16/CP1", "/api/ocpp16") == "CP1"
    assert charge_point_id_from_path("/CP1", "/") == "CP1"
    assert charge_point_id_from_path("/CP1", "") == "CP1"


@pytest.mark.parametrize("path", ["/other/CP1", "/", "/ocp/CP1", "/OCPP/CP1", "/ocppCP1", ""])
def test_path_outside_prefix_is_404(path: str) -> None:
    with pytest.raises(HandshakeRejected) as info:
        charge_point_id_from_path(path)
    assert info.value.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/ocpp/",
        "/ocpp",
        "/ocpp?x=1",
        "/ocpp/CP1/",  # trailing slash: empty last segment
        "/ocpp/" + "x" * 49,  # too long
        "/ocpp/%20",  # whitespace only
        "/ocpp/%20%20%09",
        "/ocpp/CP%0A01",  # control character (log injection)
        "/ocpp/CP%0001",
        "/ocpp/CP%7F",
        "/ocpp/CP%E2%80%8B",  # zero-width space is not printable
        "/ocpp/CP%FF",  # not UTF-8
        "/ocpp/CP%C3",  # truncated UTF-8
        "/ocpp/a%2Fb",  # encoded slash
    ],
)
def test_bad_charge_point_id_is_400(path: str) -> None:
    with pytest.raises(HandshakeRejected) as info:
        charge_point_id_from_path(path)
    assert info.value.status == 400


def test_length_is_counted_in_characters_after_decoding() -> None:
    # 48 two-byte characters: 96 bytes, 288 characters percent-encoded.
    path = "/ocpp/" + "%C3%A9" * 48
    assert charge_point_id_from_path(path) == "é" * 48


# --------------------------------------------------------------------------
# Subprotocols
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["ocpp1.6"], "ocpp1.6"),
        (["ocpp0.1", "ocpp1.6"], "ocpp1.6"),
        (["ocpp2.0.1", "ocpp1.6", "ocpp1.5"], "ocpp1.6"),
        (["ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),
    ],
)
def test_select_subprotocol_whatever_the_position(offered: list[str], expected: str) -> None:
    assert select_subprotocol(offered) == expected


def test_select_subprotocol_uses_our_preference_order() -> None:
    supported = ("ocpp2.0.1", "ocpp1.6")
    assert select_subprotocol(["ocpp1.6", "ocpp2.0.1"], supported) == "ocpp2.0.1"
    assert select_subprotocol(["ocpp1.6"], supported) == "ocpp1.6"


@pytest.mark.parametrize("offered", [["ocpp0.1"], ["ocpp2.0.1", "ocpp1.5"], ["OCPP1.6"]])
def test_select_subprotocol_rejects_unsupported_only(offered: list[str]) -> None:
    with pytest.raises(HandshakeRejected) as info:
        select_subprotocol(offered)
    assert info.value.status == 400


def test_select_subprotocol_missing() -> None:
    assert select_subprotocol([]) is None
    assert select_subprotocol([], allow_missing=True) is None
    with pytest.raises(HandshakeRejected) as info:
        select_subprotocol([], allow_missing=False)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        ("", []),
        ("ocpp1.6", ["ocpp1.6"]),
        ("ocpp1.5, ocpp1.6", ["ocpp1.5", "ocpp1.6"]),
        ("ocpp1.5,ocpp1.6,,  ", ["ocpp1.5", "ocpp1.6"]),
        (["ocpp1.5", "ocpp1.6, ocpp2.0.1"], ["ocpp1.5", "ocpp1.6", "ocpp2.0.1"]),
        ([], []),
        ((" ocpp1.6 ",), ["ocpp1.6"]),
    ],
)
def test_parse_subprotocol_header(raw: Any, expected: list[str]) -> None:
    assert parse_subprotocol_header(raw) == expected


def test_parse_then_select() -> None:
    offered = parse_subprotocol_header(["ocpp0.1", "ocpp2.0.1, ocpp1.6"])
    assert select_subprotocol(offered) == "ocpp1.6"


# --------------------------------------------------------------------------
# parse_basic_auth
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("CP1", "secret"), ("CP1", "secret")),
        (basic("CP1", "a:b:c"), ("CP1", "a:b:c")),  # password may contain ':'
        (basic("CP1", ""), ("CP1", "")),
        (basic("", "secret"), ("", "secret")),
        (basic("CP 01", "pässwörd"), ("CP 01", "pässwörd")),  # UTF-8
        ("basic " + base64.b64encode(b"CP1:pw").decode(), ("CP1", "pw")),
        ("BASIC " + base64.b64encode(b"CP1:pw").decode(), ("CP1", "pw")),
        ("Basic   " + base64.b64encode(b"CP1:pw").decode() + "  ", ("CP1", "pw")),
    ],
)
def test_parse_basic_auth_valid(header: str, expected: tuple[str, str]) -> None:
    assert parse_basic_auth(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Bearer " + base64.b64encode(b"CP1:pw").decode(),
        "Digest username=CP1",
        "Basic !!!notbase64!!!",
        "Basic " + base64.b64encode(b"CP1:pass").decode().rstrip("="),  # bad padding
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"CP1:\xff\xfe").decode(),  # not UTF-8
        "Basic" + base64.b64encode(b"CP1:pw").decode(),  # no separator
    ],
)
def test_parse_basic_auth_invalid(header: str | None) -> None:
    assert parse_basic_auth(header) is None


# --------------------------------------------------------------------------
# Password hashing
# --------------------------------------------------------------------------


def test_hash_format() -> None:
    scheme, n, r, p, salt, digest = STORED.split("$")
    assert scheme == "scrypt"
    assert int(n) >= 2**13 and int(r) >= 8 and int(p) >= 1
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32


def test_hash_is_salted() -> None:
    again = hash_password(PASSWORD)
    assert again != STORED
    assert verify_password(PASSWORD, again)


def test_verify_right_and_wrong_password() -> None:
    assert verify_password(PASSWORD, STORED)
    assert not verify_password(PASSWORD + "x", STORED)
    assert not verify_password(PASSWORD[:-1], STORED)
    assert not verify_password("", STORED)


@pytest.mark.parametrize(
    "password", ["a" * 16, "b" * 40, "short", "x" * 200, "with:colon and spaces", "ünïcödé-κλειδί"]
)
def test_any_length_round_trips(password: str) -> None:
    # Length rules belong to provisioning, never to verification.
    assert verify_password(password, hash_password(password))


def test_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_hash_password_cost_parameters() -> None:
    """Hashing runs at every connection: the cost stays at scrypt n=2**13, r=8, p=1
    (8 MiB, measured at about 17 ms here). Speed itself is not asserted (shared, noisy
    machines); this pins the parameters the measurement was made with."""
    scheme, n, r, p, _salt, _digest = hash_password(PASSWORD).split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**13, 8, 1)


def _mutations(stored: str) -> list[str]:
    scheme, n, r, p, salt, digest = stored.split("$")
    return [
        "",
        "garbage",
        "$$$$$",
        stored + "$extra",
        stored.rsplit("$", 1)[0],
        "$".join(("bcrypt", n, r, p, salt, digest)),
        "$".join((scheme, "abc", r, p, salt, digest)),
        "$".join((scheme, "1000", r, p, salt, digest)),  # n not a power of two
        "$".join((scheme, "1", r, p, salt, digest)),
        "$".join((scheme, "0", r, p, salt, digest)),
        "$".join((scheme, "-8192", r, p, salt, digest)),
        "$".join((scheme, str(2**40), r, p, salt, digest)),  # absurd memory
        "$".join((scheme, str(2**20), "64", p, salt, digest)),  # over the memory cap
        "$".join((scheme, n, "0", p, salt, digest)),
        "$".join((scheme, n, r, "0", salt, digest)),
        "$".join((scheme, n, r, "1000", salt, digest)),
        "$".join((scheme, n, r, p, "", digest)),
        "$".join((scheme, n, r, p, "***", digest)),
        "$".join((scheme, n, r, p, salt, "")),
        "$".join((scheme, n, r, p, salt, "not base64!")),
        "$".join((scheme, n, r, p, salt, base64.b64encode(b"short").decode())),
        "$".join((scheme, n, r, p, salt, digest[:-4])),  # truncated base64
        "$".join((scheme, n, r, p, salt, base64.b64encode(b"\0" * 32).decode())),
        "$".join((scheme, n, r, p, base64.b64encode(b"other-salt").decode(), digest)),
    ]


@pytest.mark.parametrize("index", range(len(_mutations(STORED))))
def test_verify_malformed_stored_value_is_false(index: int) -> None:
    assert verify_password(PASSWORD, _mutations(STORED)[index]) is False


def test_verify_never_raises_on_odd_input() -> None:
    assert verify_password("\ud800", STORED) is False  # lone surrogate: unencodable
    assert verify_password(PASSWORD, None) is False  # type: ignore[arg-type]
    assert verify_password(None, STORED) is False  # type: ignore[arg-type]


def test_verify_accepts_other_parameters() -> None:
    # Stored parameters win, so the defaults can be raised later.
    salt = b"0123456789abcdef"
    digest = auth._scrypt(PASSWORD, salt, 2**10, 4, 2, 32)
    stored = "$".join(
        (
            "scrypt",
            "1024",
            "4",
            "2",
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        )
    )
    assert verify_password(PASSWORD, stored)
    assert not verify_password("wrong", stored)


# --------------------------------------------------------------------------
# Credential store
# --------------------------------------------------------------------------


async def test_in_memory_credential_store() -> None:
    store = InMemoryCredentialStore()
    as_protocol: CredentialStore = store  # structural typing check
    assert await as_protocol.get_credentials(CP) is None

    store.set(CP, password=PASSWORD, security_profile=2)
    creds = await store.get_credentials(CP)
    assert creds is not None
    assert creds.security_profile == 2
    assert creds.password_hash is not None
    assert creds.password_hash != PASSWORD  # only the hash is kept
    assert verify_password(PASSWORD, creds.password_hash)

    store.set(CP)  # replace: no password, server default profile
    assert await store.get_credentials(CP) == ChargePointCredentials(None, None)

    store.remove(CP)
    store.remove(CP)  # idempotent
    assert await store.get_credentials(CP) is None


def test_in_memory_store_rejects_unknown_profile() -> None:
    with pytest.raises(ValueError, match="security profile"):
        InMemoryCredentialStore().set(CP, security_profile=4)


def test_credentials_are_frozen() -> None:
    creds = ChargePointCredentials(security_profile=1, password_hash=STORED)
    with pytest.raises(AttributeError):
        creds.security_profile = 3  # type: ignore[misc]


# --------------------------------------------------------------------------
# authenticate
# --------------------------------------------------------------------------


def run(
    *,
    profile: int | None = None,
    password_hash: str | None = STORED,
    known: bool = True,
    authorization: str | None = None,
    tls: bool = False,
    cn: str | None = None,
    default_profile: int = 1,
    charge_point_id: str = CP,
) -> int:
    credentials = ChargePointCredentials(profile, password_hash) if known else None
    return authenticate(
        charge_point_id,
        authorization=authorization,
        tls=tls,
        peer_common_name=cn,
        credentials=credentials,
        default_profile=default_profile,
    )


def rejected(**kwargs: Any) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as info:
        run(**kwargs)
    assert info.value.status == 401
    assert PASSWORD not in info.value.reason
    return info.value


# Profile 0 ---------------------------------------------------------------


def test_profile0_known_and_unknown_are_allowed() -> None:
    assert run(default_profile=0) == 0
    assert run(default_profile=0, known=False) == 0
    assert run(default_profile=0, known=False, tls=True) == 0
    assert run(profile=0, default_profile=3) == 0  # per charge point override


def test_profile0_ignores_credentials() -> None:
    assert run(default_profile=0, authorization=basic(CP, "wrong")) == 0


# Profile 1 ---------------------------------------------------------------


def test_profile1_accepts_right_password() -> None:
    assert run(default_profile=1, authorization=basic(CP, PASSWORD)) == 1
    assert run(profile=1, default_profile=0, authorization=basic(CP, PASSWORD)) == 1


def test_profile1_also_accepts_tls() -> None:
    assert run(profile=1, tls=True, authorization=basic(CP, PASSWORD)) == 1


def test_profile1_refusals() -> None:
    assert "wrong password" in rejected(profile=1, authorization=basic(CP, PASSWORD + "!")).reason
    assert "missing" in rejected(profile=1, authorization=None).reason
    assert "malformed" in rejected(profile=1, authorization="Basic ???").reason
    assert "missing" in rejected(profile=1, authorization="Bearer abc").reason


def test_profile1_username_must_be_charge_point_id() -> None:
    error = rejected(profile=1, authorization=basic("CP-002", PASSWORD))
    assert "CP-002" not in error.reason  # never name another charge point
    rejected(profile=1, authorization=basic("cp-001", PASSWORD))  # exact match
    rejected(profile=1, authorization=basic("", PASSWORD))


def test_profile1_without_password_hash_is_refused() -> None:
    error = rejected(profile=1, password_hash=None, authorization=basic(CP, PASSWORD))
    assert "no password" in error.reason


def test_profile1_with_corrupt_hash_is_refused() -> None:
    rejected(profile=1, password_hash="scrypt$broken", authorization=basic(CP, PASSWORD))


def test_default_profile_applies_when_charge_point_has_none() -> None:
    assert run(profile=None, default_profile=1, authorization=basic(CP, PASSWORD)) == 1
    rejected(profile=None, default_profile=2, authorization=basic(CP, PASSWORD))


# Profile 2 ---------------------------------------------------------------


def test_profile2_needs_tls_and_password() -> None:
    assert run(profile=2, tls=True, authorization=basic(CP, PASSWORD)) == 2
    assert "TLS" in rejected(profile=2, tls=False, authorization=basic(CP, PASSWORD)).reason
    rejected(profile=2, tls=True, authorization=basic(CP, "wrong"))
    rejected(profile=2, tls=True, authorization=None)


def test_profile2_client_certificate_does_not_replace_password() -> None:
    rejected(profile=2, tls=True, cn=CP, authorization=None)


# Profile 3 ---------------------------------------------------------------


def test_profile3_needs_tls_and_matching_certificate() -> None:
    assert run(profile=3, tls=True, cn=CP, password_hash=None) == 3
    assert run(profile=3, tls=True, cn=CP, authorization=basic(CP, "ignored")) == 3
    assert "TLS" in rejected(profile=3, tls=False, cn=CP).reason
    assert "certificate" in rejected(profile=3, tls=True, cn=None).reason
    error = rejected(profile=3, tls=True, cn="CP-002")
    assert "CP-002" not in error.reason
    rejected(profile=3, tls=True, cn="cp-001")  # exact match


def test_profile3_password_does_not_replace_certificate() -> None:
    rejected(profile=3, tls=True, cn=None, authorization=basic(CP, PASSWORD))


def test_profile3_as_server_default() -> None:
    assert run(profile=None, default_profile=3, tls=True, cn=CP) == 3


# Unknown charge points ------------------------------------------------------


@pytest.mark.parametrize("default_profile", [1, 2, 3])
def test_unknown_charge_point_is_refused_above_profile0(default_profile: int) -> None:
    error = rejected(
        known=False,
        default_profile=default_profile,
        tls=True,
        cn=CP,
        authorization=basic(CP, PASSWORD),
    )
    assert error.reason == "unknown charge point"


# Configuration errors -------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 4, 99])
def test_invalid_stored_profile_fails_closed(bad: int) -> None:
    rejected(profile=bad, default_profile=0)


@pytest.mark.parametrize("bad", [-1, 4])
def test_invalid_default_profile_is_a_configuration_error(bad: int) -> None:
    with pytest.raises(ValueError, match="default security profile"):
        run(default_profile=bad)


def test_handshake_rejected_attributes() -> None:
    error = HandshakeRejected(401, "wrong password")
    assert (error.status, error.reason) == (401, "wrong password")
    assert str(error) == "401: wrong password"


# --------------------------------------------------------------------------
# peer_common_name (real TLS objects are covered in test_tls.py)
# --------------------------------------------------------------------------


class FakeSSL:
    def __init__(self, cert: Any = None, error: Exception | None = None) -> None:
        self._cert = cert
        self._error = error

    def getpeercert(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._cert


def _cn(obj: FakeSSL | None) -> str | None:
    return peer_common_name(obj)  # type: ignore[arg-type]


def test_peer_common_name_from_subject() -> None:
    cert = {
        "subject": (
            (("countryName", "NL"),),
            (("organizationName", "Kilowatt"),),
            (("commonName", "CP-001"),),
        )
    }
    assert _cn(FakeSSL(cert)) == "CP-001"


def test_peer_common_name_absent_cases() -> None:
    assert _cn(None) is None
    assert _cn(FakeSSL({})) is None  # no certificate, or not verified
    assert _cn(FakeSSL(None)) is None
    assert _cn(FakeSSL({"subject": ((("organizationName", "X"),),)})) is None
    assert _cn(FakeSSL(error=ValueError("handshake not done"))) is None


def test_peer_common_name_ambiguous_is_none() -> None:
    cert = {"subject": ((("commonName", "CP-001"),), (("commonName", "CP-002"),))}
    assert _cn(FakeSSL(cert)) is None


def test_peer_common_name_on_plain_context_object() -> None:
    # An SSLObject without a completed handshake must not raise.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    obj = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
    assert peer_common_name(obj) is None


def test_peer_common_name_ignores_malformed_subject() -> None:
    assert _cn(FakeSSL({"subject": "CN=CP-001"})) is None
    assert _cn(FakeSSL({"subject": ("commonName",)})) is None
    assert _cn(FakeSSL({"subject": ((("commonName",),),)})) is None
    assert _cn(FakeSSL({"subject": ((("commonName", 7),),)})) is None


# --------------------------------------------------------------------------
# Timing and layering
# --------------------------------------------------------------------------


@pytest.mark.parametrize("known", [False, True])
def test_password_check_runs_even_without_a_hash(
    monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    # Unknown id or no password: scrypt still runs, so response time does not
    # tell an attacker which charge point ids are provisioned.
    calls: list[str] = []
    real = auth.verify_password

    def spy(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", spy)
    rejected(profile=1, known=known, password_hash=None, authorization=basic(CP, PASSWORD))
    assert calls == [PASSWORD]


def test_gateway_auth_and_tls_import_only_the_stdlib() -> None:
    # Layering: kilowatt.gateway must not depend on services or store, and
    # these two modules stay free of third-party imports.
    for module in (auth, tls):
        assert module.__file__ is not None
        with open(module.__file__, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in sys.stdlib_module_names or name == "__future__", (
                    module.__name__,
                    name,
                )
