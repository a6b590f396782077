"""Authentication of the WebSocket upgrade request (pure functions, no I/O).

Everything here runs on data the server has already read from the HTTP
upgrade request and the TLS layer; nothing blocks on the network. The one
expensive operation is :func:`verify_password` (scrypt, tens of
milliseconds), which the server should run off the event loop.

References:

* OCPP-J 1.6 §3 (connection URL, ``Sec-WebSocket-Protocol: ocpp1.6``).
* OCPP 1.6 Security Whitepaper (Improved security for OCPP 1.6-J) §2,
  "Secure connection setup": security profiles 1 (Unsecured Transport with
  Basic Authentication), 2 (TLS with Basic Authentication) and 3 (TLS with
  Client Side Certificates). Profile 0 ("no authentication") is this
  project's name for the unsecured OCPP-J 1.6 behaviour and is only used when
  an operator configures it explicitly.
* RFC 6455 §4.2.2 (subprotocol selection), RFC 7617 (Basic authentication).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

__all__ = [
    "MAX_CHARGE_POINT_ID_LENGTH",
    "SECURITY_PROFILES",
    "ChargePointCredentials",
    "CredentialStore",
    "HandshakeRejected",
    "InMemoryCredentialStore",
    "authenticate",
    "charge_point_id_from_path",
    "hash_password",
    "parse_basic_auth",
    "parse_subprotocol_header",
    "peer_common_name",
    "select_subprotocol",
    "verify_password",
]

# Our own upper bound: OCPP-J 1.6 sets no limit on the id in the URL. We use
# the 48 characters OCPP 2.0.1 gives the charging station identity, which
# real-world 1.6 ids fit in, to keep hostile input out of logs and lookups.
MAX_CHARGE_POINT_ID_LENGTH = 48

# 0 = no authentication (only if configured), 1-3 = Security Whitepaper §2.
SECURITY_PROFILES = frozenset({0, 1, 2, 3})


class HandshakeRejected(Exception):
    """The upgrade request must be refused with HTTP ``status``.

    ``reason`` is meant for the server log only. It never names or describes
    another charge point, and never contains a password; the HTTP response
    body should be the bare status phrase (e.g. "Unauthorized").
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


# --------------------------------------------------------------------------
# Charge point id from the request path
# --------------------------------------------------------------------------


def charge_point_id_from_path(path: str, prefix: str = "/ocpp/") -> str:
    """Return the charge point id of an upgrade request target.

    OCPP-J 1.6 §3.1.1: the charge point connects to
    ``<central system URL>/<charge point id>``, so the id is the last path
    segment. Raises :class:`HandshakeRejected` with 404 when the path is not
    under ``prefix`` and with 400 when the id is missing or not acceptable.
    """
    route = path.split("?", 1)[0]
    base = prefix.strip("/")
    base = f"/{base}/" if base else "/"
    if route != base.rstrip("/") and not route.startswith(base):
        raise HandshakeRejected(404, "path is not under the OCPP endpoint")

    # Split before decoding: a %2F inside the id is data, not a separator
    # (and is rejected below, see _check_charge_point_id).
    raw = route[len(base) :] if route.startswith(base) else ""
    segment = raw.rsplit("/", 1)[-1]
    if not segment:
        raise HandshakeRejected(400, "missing charge point id in path")
    try:
        charge_point_id = unquote(segment, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HandshakeRejected(400, "charge point id is not valid UTF-8") from None
    _check_charge_point_id(charge_point_id)
    return charge_point_id


def _check_charge_point_id(charge_point_id: str) -> None:
    # OCPP ids are CiString-like identifiers: printable text of bounded
    # length. Control characters would allow log injection; a decoded "/"
    # would make "a%2Fb" look like the path "a/b".
    if not 1 <= len(charge_point_id) <= MAX_CHARGE_POINT_ID_LENGTH:
        raise HandshakeRejected(
            400, f"charge point id must be 1-{MAX_CHARGE_POINT_ID_LENGTH} characters"
        )
    if not charge_point_id.isprintable() or not charge_point_id.strip():
        raise HandshakeRejected(400, "charge point id contains non-printable characters")
    if "/" in charge_point_id:
        raise HandshakeRejected(400, "charge point id contains '/'")


# --------------------------------------------------------------------------
# WebSocket subprotocol negotiation
# --------------------------------------------------------------------------


def parse_subprotocol_header(values: str | Iterable[str] | None) -> list[str]:
    """Split raw ``Sec-WebSocket-Protocol`` header value(s) into tokens.

    RFC 6455 §4.1 / RFC 9110 §5.3: the header is a comma-separated list and
    may be repeated; repeated headers are equivalent to one joined by commas.
    Empty list elements are ignored, order is kept.
    """
    if values is None:
        return []
    if isinstance(values, str):
        values = (values,)
    return [token.strip() for value in values for token in value.split(",") if token.strip()]


def select_subprotocol(
    offered: Sequence[str],
    supported: Sequence[str] = ("ocpp1.6",),
    *,
    allow_missing: bool = True,
) -> str | None:
    """Choose the subprotocol to answer with.

    Returns the first entry of ``supported`` (our preference order) that the
    client offered, whatever its position in the client's list. RFC 6455
    §4.2.2 lets the server pick any offered value; tokens are compared
    exactly, since the server must echo one of the client's own values.

    OCPP-J 1.6 §3.1.2: the charge point names its OCPP version(s) in
    ``Sec-WebSocket-Protocol``. If none of them is ours the spec lets the
    server complete the handshake without the header and then close at
    once; refusing with 400 up front ends the same way for the client and
    spends no resources on a connection that cannot work. A client that
    offers nothing gets ``None`` (no subprotocol in the response) when
    ``allow_missing``, else 400: some early 1.6 firmware omits the header.
    """
    if not offered:
        if allow_missing:
            return None
        raise HandshakeRejected(400, "no WebSocket subprotocol offered")
    offered_set = set(offered)
    for protocol in supported:
        if protocol in offered_set:
            return protocol
    raise HandshakeRejected(
        400, f"no supported WebSocket subprotocol offered (offered {list(offered)!r})"
    )


# --------------------------------------------------------------------------
# HTTP Basic authentication
# --------------------------------------------------------------------------


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """Parse an ``Authorization: Basic ...`` header into (user-id, password).

    RFC 7617 §2: ``Basic`` (case-insensitive scheme) followed by the base64
    encoding of ``user-id ":" password``. The user-id cannot contain a colon,
    so the split is at the first one and the password may contain colons.
    Returns ``None`` for a missing header, another scheme, invalid base64 or
    credentials that are not UTF-8 (RFC 7617 §2.1 only defines UTF-8).
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user_id, colon, password = decoded.partition(":")
    if not colon:
        return None
    return user_id, password


# --------------------------------------------------------------------------
# Password hashing
# --------------------------------------------------------------------------

# scrypt cost: n=2**13, r=8, p=1 uses 8 MiB and takes ~15-20 ms on a small
# server core. Verification runs at every (re)connection, and after a central
# system restart every charge point reconnects at once, so the cost must stay
# well under 50 ms. The passwords are OCPP AuthorizationKeys (Security
# Whitepaper, AuthorizationKey: 16-40 characters, usually random), so resistance to
# guessing comes mostly from their length; the salt prevents precomputation.
# The parameters are stored in each hash, so they can be raised later
# without invalidating existing hashes.
_SCRYPT_N = 2**13
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_SCHEME = "scrypt"
# Bounds for parameters read back from storage: a corrupted or hostile value
# must not make verification allocate gigabytes or spin for seconds.
_MAX_SCRYPT_MEMORY = 64 * 1024 * 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL's memory need is 128*r*(n+p+2) bytes; maxmem must cover it.
    maxmem = 128 * r * (n + p + 2) + 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen
    )


def hash_password(password: str) -> str:
    """Hash a charge point password for storage.

    Returns ``scrypt$n$r$p$<salt base64>$<hash base64>`` with a fresh
    16-byte random salt. Any length is accepted, including AuthorizationKeys
    of 16-40 characters (Security Whitepaper); empty passwords are not.
    """
    if not password:
        raise ValueError("password must not be empty")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _HASH_BYTES)
    return "$".join(
        (
            _SCHEME,
            str(_SCRYPT_N),
            str(_SCRYPT_R),
            str(_SCRYPT_P),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(digest).decode("ascii"),
        )
    )


def verify_password(password: str, stored: str) -> bool:
    """Check ``password`` against a value produced by :func:`hash_password`.

    Constant-time comparison of the digests; returns ``False`` (never
    raises) for a malformed stored value or an unencodable password. No
    length rule is applied here: which passwords are acceptable is decided
    when they are set, not when they are checked.
    """
    try:
        scheme, n_text, r_text, p_text, salt_text, digest_text = stored.split("$")
        if scheme != _SCHEME:
            return False
        n, r, p = int(n_text), int(r_text), int(p_text)
        if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
            return False
        if 128 * r * (n + p + 2) > _MAX_SCRYPT_MEMORY:
            return False
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(digest_text, validate=True)
        # Digests shorter than ours are refused: scrypt output with a smaller
        # dklen is a prefix of the full one, so a truncated value would
        # otherwise still verify.
        if len(salt) < _SALT_BYTES or not _HASH_BYTES <= len(expected) <= 64:
            return False
        actual = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, TypeError, AttributeError, MemoryError):
        # ValueError covers int(), binascii.Error, UnicodeEncodeError
        # (lone surrogates) and OpenSSL's own parameter checks.
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    # Verified against when there is no real hash, so that the response time
    # does not reveal whether a charge point id is provisioned.
    return hash_password(secrets.token_urlsafe(24))


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargePointCredentials:
    """What the central system knows to authenticate one charge point."""

    security_profile: int | None  # None = use the server default
    password_hash: str | None  # from hash_password(); None = no password set


class CredentialStore(Protocol):
    """Source of charge point credentials used during the handshake."""

    async def get_credentials(self, charge_point_id: str) -> ChargePointCredentials | None:
        """Return the credentials, or ``None`` for an unknown charge point."""
        ...


class InMemoryCredentialStore:
    """Dict-backed :class:`CredentialStore` (tests, and before a database)."""

    def __init__(self) -> None:
        self._credentials: dict[str, ChargePointCredentials] = {}

    def set(
        self,
        charge_point_id: str,
        *,
        password: str | None = None,
        security_profile: int | None = None,
    ) -> None:
        """Provision (or replace) a charge point; the password is hashed."""
        if security_profile is not None and security_profile not in SECURITY_PROFILES:
            raise ValueError(f"unknown security profile {security_profile!r}")
        password_hash = hash_password(password) if password is not None else None
        self._credentials[charge_point_id] = ChargePointCredentials(
            security_profile=security_profile, password_hash=password_hash
        )

    def remove(self, charge_point_id: str) -> None:
        """Forget a charge point (no error if it is unknown)."""
        self._credentials.pop(charge_point_id, None)

    async def get_credentials(self, charge_point_id: str) -> ChargePointCredentials | None:
        return self._credentials.get(charge_point_id)


# --------------------------------------------------------------------------
# Security profile enforcement
# --------------------------------------------------------------------------


def authenticate(
    charge_point_id: str,
    *,
    authorization: str | None,
    tls: bool,
    peer_common_name: str | None,
    credentials: ChargePointCredentials | None,
    default_profile: int,
) -> int:
    """Authenticate an upgrade request; return the effective security profile.

    ``authorization`` is the raw ``Authorization`` header, ``tls`` whether
    the connection is TLS, ``peer_common_name`` the CN of a client
    certificate that the TLS layer has verified (see :func:`peer_common_name`).
    The effective profile is the charge point's own, else ``default_profile``.
    Raises :class:`HandshakeRejected` (401) when the request does not meet it.

    Profiles 1 and 2 run scrypt (see :func:`verify_password`); call this via
    ``asyncio.to_thread`` so the event loop keeps serving other connections.
    """
    if default_profile not in SECURITY_PROFILES:
        raise ValueError(f"unknown default security profile {default_profile!r}")
    profile = default_profile
    if credentials is not None and credentials.security_profile is not None:
        profile = credentials.security_profile
    if profile not in SECURITY_PROFILES:
        # A bad stored value must fail closed, not fall back to "open".
        raise HandshakeRejected(401, "charge point has an invalid security profile configured")

    if profile == 0:
        # Unsecured OCPP-J 1.6: anyone claiming the id is let in. Whether an
        # unknown charge point may stay is the BootNotification policy's call.
        return profile

    if credentials is None:
        _waste_password_check(authorization, charge_point_id)
        raise HandshakeRejected(401, "unknown charge point")

    if profile >= 2 and not tls:
        # Security Whitepaper §2, profiles 2 and 3: TLS (1.2 or later) only;
        # accepting plain ws would be a downgrade.
        raise HandshakeRejected(401, f"security profile {profile} requires TLS")

    if profile == 3:
        # Security Whitepaper §2, "TLS with Client Side Certificates": the
        # client certificate authenticates the charge point; the commonName
        # RDN of its subject must be the charge point id.
        # Basic credentials, if sent anyway, are not needed and ignored.
        if peer_common_name is None:
            raise HandshakeRejected(401, "security profile 3 requires a client certificate")
        if peer_common_name != charge_point_id:
            raise HandshakeRejected(
                401, "client certificate commonName does not match the charge point id"
            )
        return profile

    # Profiles 1 and 2 (Security Whitepaper §2, "... with Basic
    # Authentication"): HTTP Basic auth with the charge point id as user-id
    # and the AuthorizationKey as password.
    basic = parse_basic_auth(authorization)
    if basic is None:
        raise HandshakeRejected(401, "missing or malformed Basic credentials")
    username, password = basic
    if username != charge_point_id:
        # Do not echo the username: it may be another charge point's id.
        raise HandshakeRejected(401, "Basic user-id does not match the charge point id")
    if credentials.password_hash is None:
        verify_password(password, _dummy_hash())
        raise HandshakeRejected(401, "no password provisioned for charge point")
    if not verify_password(password, credentials.password_hash):
        raise HandshakeRejected(401, "wrong password")
    return profile


def _waste_password_check(authorization: str | None, charge_point_id: str) -> None:
    basic = parse_basic_auth(authorization)
    if basic is not None and basic[0] == charge_point_id:
        verify_password(basic[1], _dummy_hash())


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """Return the subject commonName of the peer's verified certificate.

    ``getpeercert()`` only returns fields of a certificate that OpenSSL has
    verified against the configured client CAs (an unverified certificate
    gives an empty dict), so a name returned here is trustworthy. Returns
    ``None`` without TLS, without a client certificate, before the handshake,
    or when the subject holds no or several commonNames (ambiguous).
    """
    if ssl_object is None:
        return None
    try:
        cert = ssl_object.getpeercert()
    except ValueError:  # handshake not done yet
        return None
    if not cert:
        return None
    names = _common_names(cert.get("subject"))
    return names[0] if len(names) == 1 else None


def _common_names(subject: object) -> list[str]:
    # getpeercert() gives the subject as a tuple of RDNs, each a tuple of
    # (attribute, value) pairs; typeshed describes it one level flatter, so
    # the structure is checked here instead of trusted.
    names: list[str] = []
    if not isinstance(subject, tuple):
        return names
    for rdn in subject:
        if not isinstance(rdn, tuple):
            continue
        for attribute in rdn:
            if (
                isinstance(attribute, tuple)
                and len(attribute) == 2
                and attribute[0] == "commonName"
                and isinstance(attribute[1], str)
            ):
                names.append(attribute[1])
    return names
