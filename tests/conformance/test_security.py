"""OCA compliance test cases for the Central System — Security (OCPP 1.6 Security Whitepaper).

The Security Whitepaper (edition 2, §2 "Secure connection setup") defines three
security profiles for OCPP-J 1.6:

1. Unsecured transport with Basic Authentication: ``Authorization: Basic`` on the
   upgrade request, user-id = the charge point id, password = its AuthorizationKey.
2. TLS with Basic Authentication: the same credentials over TLS 1.2 or later; the
   Central System presents a server certificate and supports the cipher suites
   TLS_ECDHE_ECDSA_WITH_AES_{128,256}_GCM_SHA{256,384} (ECDSA certificate) and
   TLS_RSA_WITH_AES_{128,256}_GCM_SHA{256,384} (RSA certificate), since a charge
   point may implement only one of the pairs.
3. TLS with client side certificates: the charge point authenticates with a
   certificate whose subject commonName is its id.

A charge point that does not meet its profile is refused before any OCPP traffic:
at the TLS layer when the TLS handshake cannot succeed, else with HTTP 401 on the
upgrade request. Each case starts its own `kilowatt serve` process with the settings
of its profile and a throw-away PKI (`tests/pki.py`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.conformance.harness import (
    TIMEOUT,
    Server,
    Station,
    free_port,
    register,
    serving,
    station,
)
from tests.pki import PkiFiles, client_ssl_context, create_pki, issue_client_certificate

# An AuthorizationKey as the Whitepaper asks for: 16-20 bytes of (here printable) text.
PASSWORD = "Kw-conformance-2024!"

WHITEPAPER_TLS12_SUITES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
}


def basic(user_id: str, password: str) -> dict[str, str]:
    """The Authorization header of profiles 1 and 2 (RFC 7617)."""
    token = base64.b64encode(f"{user_id}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def tls_settings(pki: PkiFiles, **more: Any) -> dict[str, Any]:
    """Both server certificates of the test PKI, RSA and EC."""
    return {
        "tls_cert_file": pki.server_rsa.cert_path,
        "tls_key_file": pki.server_rsa.key_path,
        "tls_ec_cert_file": pki.server_ec.cert_path,
        "tls_ec_key_file": pki.server_ec.key_path,
        **more,
    }


async def refused_status(server: Server, charge_point_id: str, **options: Any) -> InvalidStatus:
    """Connect, expect the upgrade to be refused with an HTTP status; return it."""
    with pytest.raises(InvalidStatus) as refused:
        async with station(server, charge_point_id, **options):
            pass
    return refused.value


def tls_failure(exc: BaseException) -> ssl.SSLError | ConnectionError | EOFError | None:
    """The TLS-layer error somewhere in ``exc``'s chain (websockets wraps some).

    In TLS 1.3 a client finishes its side of the handshake before the server has
    checked the client's certificate: a refusal then reaches it as the connection
    ending where the HTTP answer was expected (EOFError), not as an SSLError.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ConnectionError | EOFError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def handshake_refused(server: Server, charge_point_id: str, **options: Any) -> BaseException:
    """Connect, expect no WebSocket: the TLS layer refuses; return the client's error."""
    with pytest.raises((OSError, InvalidHandshake, EOFError)) as refused:
        async with station(server, charge_point_id, **options):
            pass
    assert not isinstance(refused.value, InvalidStatus), "refused by HTTP, not by TLS"
    assert tls_failure(refused.value) is not None, repr(refused.value)
    return refused.value


async def charge_point(api: httpx.AsyncClient, charge_point_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/charge-points/{charge_point_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def untouched(api: httpx.AsyncClient, charge_point_id: str) -> None:
    """A refused connection left no trace on the charge point's record."""
    state = await charge_point(api, charge_point_id)
    assert state["connected"] is False
    assert state["connected_since"] is None
    assert state["last_seen_at"] is None
    assert state["last_boot_at"] is None
    assert state["vendor"] is None


def refusals_logged(server: Server, charge_point_id: str) -> list[str]:
    assert server.log is not None
    return [
        line
        for line in server.log.read_text().splitlines()
        if 'event="connection refused"' in line and f"charge_point={charge_point_id} " in line
    ]


def der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def peer(cp: Station) -> ssl.SSLObject:
    """The TLS session of a charge point's connection."""
    ssl_object = cp.wire.ws.transport.get_extra_info("ssl_object")
    assert isinstance(ssl_object, ssl.SSLObject)
    return ssl_object


@contextlib.asynccontextmanager
async def http_api(port: int, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    ) as client:
        yield client


# ------------------------------------------------------------------ profile 1


async def test_tc_085_basic_authentication_valid_username_password(tmp_path: Path) -> None:
    """Security profile 1: HTTP Basic authentication on the upgrade request.

    Whitepaper §2 (profile 1): the charge point sends ``Authorization: Basic
    base64(<chargePointId>:<AuthorizationKey>)``; the Central System checks the
    user-id against the id in the URL and the password against the one it keeps
    for that charge point. Anything else is refused with HTTP 401 before the
    WebSocket exists, so no OCPP message is exchanged and nothing is recorded for
    the charge point. Choices left open: 401 carries ``WWW-Authenticate: Basic``
    (RFC 7235) so that the client knows which scheme is expected; the refusal is
    logged with the charge point id (never with the password).
    """
    async with serving(tmp_path, security_profile=1) as server, server.api() as api:
        good, victim = "TC085-1", "TC085-2"
        await register(api, good, password=PASSWORD)
        await register(api, victim, password=PASSWORD)

        async with station(server, good, headers=basic(good, PASSWORD)) as cp:
            boot = await cp.boot()
            assert boot.status == "Accepted"
            _request, answer = cp.last_exchange("BootNotification")
            assert answer[0] == 3 and answer[2]["status"] == "Accepted"
            state = await charge_point(api, good)
            assert state["connected"] is True
            assert state["vendor"] == "Conformance"

        attempts: dict[str, dict[str, str]] = {
            "wrong password": basic(victim, PASSWORD[::-1]),
            "missing header": {},
            "another charge point's user-id": basic(good, PASSWORD),
            "not Basic": {"Authorization": f"Bearer {PASSWORD}"},
            "empty password": basic(victim, ""),
        }
        for what, headers in attempts.items():
            refused = await refused_status(server, victim, headers=headers)
            assert refused.response.status_code == 401, what
            challenge = refused.response.headers.get("WWW-Authenticate", "")
            assert challenge.startswith("Basic "), what
            # The refusal says nothing about why: no hint for a guesser.
            assert refused.response.body in (b"Unauthorized\n", b""), what
        await untouched(api, victim)
        assert len(refusals_logged(server, victim)) == len(attempts)
        assert server.log is not None
        assert PASSWORD not in server.log.read_text()


# ------------------------------------------------------------------ profile 2


async def test_tc_086_tls_server_side_certificate(tmp_path: Path) -> None:
    """Security profile 2: TLS (server certificate) with Basic authentication.

    Whitepaper §2 (profile 2): TLS 1.2 or later only; the Central System offers
    both cipher-suite pairs, so it holds an RSA and an ECDSA certificate and a charge
    point implementing only ECDHE-ECDSA gets the EC certificate, one implementing
    only TLS_RSA gets the RSA one. The charge point verifies the server certificate
    against the CA it was given; one that does not trust that CA cannot complete
    the TLS handshake. Basic authentication is still required on top of TLS.
    Choice left open: TLS 1.3 is accepted as well ("1.2 or above"), with OpenSSL's
    TLS 1.3 suites; a TLS 1.2 client with no suite restriction gets an ECDHE suite
    first (forward secrecy), the mandatory TLS_RSA suites stay available.
    """
    cp_id = "TC086-1"
    pki = create_pki(tmp_path, cp_id)
    async with serving(tmp_path, security_profile=2, **tls_settings(pki)) as server:
        assert server.scheme == "wss"
        trusted = client_ssl_context(pki)
        async with server.api(verify=trusted) as api:
            await register(api, cp_id, password=PASSWORD)
            auth = basic(cp_id, PASSWORD)

            # TLS 1.3 (the default of a current client).
            async with station(server, cp_id, ssl_context=trusted, headers=auth) as cp:
                assert peer(cp).version() == "TLSv1.3"
                assert (await cp.boot()).status == "Accepted"
                assert (await charge_point(api, cp_id))["connected"] is True

            # TLS 1.2, no restriction on the suites.
            tls12 = client_ssl_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
            async with station(server, cp_id, ssl_context=tls12, headers=auth) as cp:
                assert peer(cp).version() == "TLSv1.2"
                assert (await cp.boot()).status == "Accepted"

            # A charge point implementing only the ECDHE-ECDSA pair: the EC certificate.
            ec_only = client_ssl_context(
                pki,
                ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
                maximum_version=ssl.TLSVersion.TLSv1_2,
            )
            async with station(server, cp_id, ssl_context=ec_only, headers=auth) as cp:
                session = peer(cp)
                assert session.version() == "TLSv1.2"
                cipher = session.cipher()
                assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
                assert session.getpeercert(binary_form=True) == der(pki.server_ec.cert_path)
                assert (await cp.boot()).status == "Accepted"

            # A charge point implementing only the TLS_RSA pair: the RSA certificate.
            rsa_only = client_ssl_context(
                pki,
                ciphers="AES128-GCM-SHA256:AES256-GCM-SHA384",
                maximum_version=ssl.TLSVersion.TLSv1_2,
            )
            async with station(server, cp_id, ssl_context=rsa_only, headers=auth) as cp:
                session = peer(cp)
                cipher = session.cipher()
                assert cipher is not None and cipher[0] in WHITEPAPER_TLS12_SUITES
                assert session.getpeercert(binary_form=True) == der(pki.server_rsa.cert_path)
                assert (await cp.boot()).status == "Accepted"

            # TLS does not replace Basic authentication in profile 2.
            refused = await refused_status(server, cp_id, ssl_context=trusted)
            assert refused.response.status_code == 401
            refused = await refused_status(
                server, cp_id, ssl_context=trusted, headers=basic(cp_id, "not-the-password")
            )
            assert refused.response.status_code == 401

            # A client that does not trust our CA (here: the system CAs only).
            error = await handshake_refused(
                server, cp_id, ssl_context=ssl.create_default_context(), headers=auth
            )
            assert isinstance(tls_failure(error), ssl.SSLCertVerificationError)

            # TLS 1.1 (a client able to speak it, and nothing newer): the server ends
            # the handshake at the ClientHello: the client sees the connection reset (the
            # event loop's TLS layer aborts without flushing the protocol_version alert).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                tls11 = client_ssl_context(pki)
                tls11.minimum_version = ssl.TLSVersion.TLSv1
                tls11.maximum_version = ssl.TLSVersion.TLSv1_1
                tls11.set_ciphers("DEFAULT:@SECLEVEL=0")
            error = await handshake_refused(server, cp_id, ssl_context=tls11, headers=auth)
            failure = tls_failure(error)
            assert isinstance(failure, ConnectionResetError) or (
                isinstance(failure, ssl.SSLError)
                and failure.reason
                in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNEXPECTED_EOF_WHILE_READING")
            ), repr(failure)


# ------------------------------------------------------------------ profile 3


async def test_tc_087_tls_client_side_certificate(tmp_path: Path) -> None:
    """Security profile 3: TLS with a client certificate, commonName = charge point id.

    Whitepaper §2 (profile 3): the charge point presents a certificate signed by a
    CA the Central System trusts (``tls_client_ca_file``), and the commonName RDN of
    its subject is the charge point id (here compared with the id in the URL). The
    certificate is checked during the TLS handshake, so a charge point without one,
    or with one from another CA, never gets a WebSocket; a valid certificate of
    another charge point gets through TLS and is refused with 401 on the upgrade.
    Choices left open: Basic credentials are not needed (and ignored if sent); with
    profile 3 as the server default every TLS connection must carry a client
    certificate, so the operator API is served on its own port (``api_port``).
    """
    cp_id, other_id = "TC087-1", "TC087-2"
    pki = create_pki(tmp_path, cp_id)
    other_cert = issue_client_certificate(pki.ca, pki.directory, other_id)
    api_port = free_port()
    settings = tls_settings(pki, tls_client_ca_file=pki.ca.cert_path, api_port=api_port)
    async with (
        serving(tmp_path, security_profile=3, **settings) as server,
        http_api(api_port, server.token) as api,
    ):
        await register(api, cp_id)
        await register(api, other_id)

        valid = client_ssl_context(pki, certificate=pki.client)
        async with station(server, cp_id, ssl_context=valid) as cp:
            assert (await cp.boot()).status == "Accepted"
            _request, answer = cp.last_exchange("BootNotification")
            assert answer[0] == 3 and answer[2]["status"] == "Accepted"
            assert (await charge_point(api, cp_id))["connected"] is True
        # Over TLS 1.2 too.
        valid12 = client_ssl_context(
            pki, certificate=pki.client, maximum_version=ssl.TLSVersion.TLSv1_2
        )
        async with station(server, cp_id, ssl_context=valid12) as cp:
            assert peer(cp).version() == "TLSv1.2"
            assert (await cp.boot()).status == "Accepted"

        # Another charge point's (valid) certificate: through TLS, refused on upgrade.
        someone_else = client_ssl_context(pki, certificate=other_cert)
        refused = await refused_status(server, cp_id, ssl_context=someone_else)
        assert refused.response.status_code == 401
        assert len(refusals_logged(server, cp_id)) == 1

        # No certificate: no TLS session. Over TLS 1.2 the handshake itself fails;
        # over TLS 1.3 the client sees the connection end before any HTTP answer.
        anonymous = client_ssl_context(pki)
        await handshake_refused(server, cp_id, ssl_context=anonymous)
        anonymous12 = client_ssl_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        error = await handshake_refused(server, cp_id, ssl_context=anonymous12)
        assert isinstance(tls_failure(error), ssl.SSLError | ConnectionError), repr(error)

        # A certificate with the right commonName from a CA we do not trust.
        foreign = client_ssl_context(pki, certificate=pki.foreign_client)
        await handshake_refused(server, cp_id, ssl_context=foreign)

        # None of the refused attempts reached the charge point records.
        await untouched(api, other_id)
        assert len(refusals_logged(server, cp_id)) == 1
        state = await charge_point(api, cp_id)
        assert state["connected"] is False


# ---------------------------------------------------------- subprotocol


async def test_tc_088_websocket_subprotocol_negotiation(
    server: Server, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """OCPP-J 1.6 §3.1.2 / RFC 6455 §4.2.2: the server answers with one offered version.

    A charge point offering several OCPP versions gets ``Sec-WebSocket-Protocol:
    ocpp1.6`` — exactly one value, the one we speak, whatever its position in the
    offer. One offering none we speak is refused with 400 before the upgrade: the
    specification also allows upgrading without the header and closing at once,
    which ends the same way for the charge point and costs more.
    Decision for a client that offers no subprotocol at all (some early 1.6
    firmware omits the header): accepted by default and spoken to in OCPP 1.6 (the
    response then carries no ``Sec-WebSocket-Protocol``, as RFC 6455 requires), or
    refused with 400 when ``allow_missing_subprotocol`` is false.
    """
    cp_id = "TC088-1"
    await register(api, cp_id)

    async with station(server, cp_id, subprotocols=["ocpp1.5", "ocpp1.6"]) as cp:
        headers = cp.wire.ws.response.headers
        assert headers.get_all("Sec-WebSocket-Protocol") == ["ocpp1.6"]
        assert cp.wire.ws.subprotocol == "ocpp1.6"
        assert (await cp.boot()).status == "Accepted"

    async with station(server, cp_id, subprotocols=["ocpp1.6", "ocpp2.0.1"]) as cp:
        assert cp.wire.ws.response.headers.get_all("Sec-WebSocket-Protocol") == ["ocpp1.6"]

    refused = await refused_status(server, cp_id, subprotocols=["ocpp2.0.1"])
    assert refused.response.status_code == 400
    assert "Sec-WebSocket-Protocol" not in refused.response.headers

    # No subprotocol offered: no Sec-WebSocket-Protocol header on the request at all.
    async with connect(
        server.ocpp_url + cp_id, subprotocols=None, ping_interval=None, open_timeout=TIMEOUT
    ) as ws:
        assert "Sec-WebSocket-Protocol" not in ws.request.headers
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        assert ws.subprotocol is None
        await ws.send(
            '[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
        )
        async with asyncio.timeout(TIMEOUT):
            answer = json.loads(await ws.recv())
        assert answer[:2] == [3, "b1"] and answer[2]["status"] == "Accepted"

    async with (
        serving(tmp_path, allow_missing_subprotocol=False) as strict,
        strict.api() as strict_api,
    ):
        await register(strict_api, cp_id)
        with pytest.raises(InvalidStatus) as refused_missing:
            async with connect(
                strict.ocpp_url + cp_id,
                subprotocols=None,
                ping_interval=None,
                open_timeout=TIMEOUT,
            ):
                pass
        assert refused_missing.value.response.status_code == 400
        async with station(strict, cp_id) as cp:
            assert cp.wire.ws.subprotocol == "ocpp1.6"
            assert (await cp.boot()).status == "Accepted"
