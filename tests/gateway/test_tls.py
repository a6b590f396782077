"""Tests for kilowatt.gateway.tls with real TLS handshakes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kilowatt.gateway.auth import peer_common_name
from kilowatt.gateway.tls import TLS12_CIPHERS, TLSConfigurationError, build_server_ssl_context
from tests.pki import IssuedCertificate, PkiFiles, client_ssl_context

GREETING = b"hello\n"
TIMEOUT = 10.0

# The four suites of the Security Whitepaper, in OpenSSL spelling.
WHITEPAPER_ECDSA = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384")
WHITEPAPER_RSA = ("AES128-GCM-SHA256", "AES256-GCM-SHA384")
REFUSED = (ssl.SSLError, ConnectionError)


@dataclass(frozen=True)
class Outcome:
    version: str | None
    cipher: str
    server_certificate: x509.Certificate


@dataclass
class TlsServer:
    port: int
    # peer_common_name() as seen by the server, one entry per accepted client
    common_names: asyncio.Queue[str | None]


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[TlsServer]:
    common_names: asyncio.Queue[str | None] = asyncio.Queue()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            common_names.put_nowait(peer_common_name(writer.get_extra_info("ssl_object")))
            writer.write(GREETING)
            await writer.drain()
            await reader.read()  # until the client closes
        except REFUSED:
            pass
        finally:
            writer.close()
            with contextlib.suppress(*REFUSED):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        yield TlsServer(port=port, common_names=common_names)
    finally:
        server.close()
        await server.wait_closed()
        # Python 3.11's wait_closed() does not wait for open connections.
        if handlers:
            await asyncio.wait(handlers, timeout=TIMEOUT)


async def exchange(port: int, context: ssl.SSLContext) -> Outcome:
    """Connect, read the greeting, report what was negotiated."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"),
        TIMEOUT,
    )
    try:
        # TLS 1.3 finishes the client side of the handshake before the server
        # has checked the client certificate: a refusal shows up on read.
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        if line != GREETING:
            raise ConnectionError("server closed the connection without a greeting")
        ssl_object = writer.get_extra_info("ssl_object")
        cipher = ssl_object.cipher()
        der = ssl_object.getpeercert(binary_form=True)
        assert cipher is not None and der is not None
        return Outcome(
            version=ssl_object.version(),
            cipher=cipher[0],
            server_certificate=x509.load_der_x509_certificate(der),
        )
    finally:
        writer.close()
        with contextlib.suppress(*REFUSED):
            await writer.wait_closed()


@pytest.fixture
def dual_context(pki: PkiFiles) -> ssl.SSLContext:
    return build_server_ssl_context([pki.server_rsa.pair, pki.server_ec.pair])


def tls12_client(
    pki: PkiFiles, ciphers: str, cert: IssuedCertificate | None = None
) -> ssl.SSLContext:
    return client_ssl_context(
        pki, certificate=cert, ciphers=ciphers, maximum_version=ssl.TLSVersion.TLSv1_2
    )


# --------------------------------------------------------------------------
# Certificate choice per key type
# --------------------------------------------------------------------------


async def test_ec_only_client_gets_ec_certificate(
    pki: PkiFiles, dual_context: ssl.SSLContext
) -> None:
    async with tls_server(dual_context) as server:
        outcome = await exchange(server.port, tls12_client(pki, ":".join(WHITEPAPER_ECDSA)))
    assert outcome.version == "TLSv1.2"
    assert outcome.cipher in WHITEPAPER_ECDSA
    assert isinstance(outcome.server_certificate.public_key(), ec.EllipticCurvePublicKey)
    assert outcome.server_certificate == pki.server_ec.certificate


async def test_rsa_only_client_gets_rsa_certificate(
    pki: PkiFiles, dual_context: ssl.SSLContext
) -> None:
    async with tls_server(dual_context) as server:
        outcome = await exchange(server.port, tls12_client(pki, ":".join(WHITEPAPER_RSA)))
    assert outcome.version == "TLSv1.2"
    assert outcome.cipher in WHITEPAPER_RSA
    assert isinstance(outcome.server_certificate.public_key(), rsa.RSAPublicKey)
    assert outcome.server_certificate == pki.server_rsa.certificate


@pytest.mark.parametrize(
    ("suite", "key_type"),
    [
        *((suite, ec.EllipticCurvePublicKey) for suite in WHITEPAPER_ECDSA),
        *((suite, rsa.RSAPublicKey) for suite in WHITEPAPER_RSA),
        ("ECDHE-RSA-AES128-GCM-SHA256", rsa.RSAPublicKey),
        ("ECDHE-RSA-AES256-GCM-SHA384", rsa.RSAPublicKey),
    ],
)
async def test_each_allowed_tls12_suite_negotiates(
    pki: PkiFiles, dual_context: ssl.SSLContext, suite: str, key_type: type
) -> None:
    async with tls_server(dual_context) as server:
        outcome = await exchange(server.port, tls12_client(pki, suite))
    assert outcome.cipher == suite
    assert isinstance(outcome.server_certificate.public_key(), key_type)


async def test_forward_secrecy_preferred_for_rsa(
    pki: PkiFiles, dual_context: ssl.SSLContext
) -> None:
    # Client lists plain RSA key exchange first; the server's order wins.
    ciphers = "AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    async with tls_server(dual_context) as server:
        outcome = await exchange(server.port, tls12_client(pki, ciphers))
    assert outcome.cipher == "ECDHE-RSA-AES128-GCM-SHA256"


@pytest.mark.parametrize(
    "suite",
    [
        "ECDHE-RSA-AES128-SHA256",  # CBC
        "ECDHE-ECDSA-AES128-SHA",  # CBC, SHA-1
        "ECDHE-ECDSA-CHACHA20-POLY1305",  # AEAD but not in our list
        "DHE-RSA-AES128-GCM-SHA256",  # finite-field DH
    ],
)
async def test_other_tls12_suites_are_refused(
    pki: PkiFiles, dual_context: ssl.SSLContext, suite: str
) -> None:
    async with tls_server(dual_context) as server:
        with pytest.raises(REFUSED):
            await exchange(server.port, tls12_client(pki, suite))


async def test_tls13_client_uses_tls13(pki: PkiFiles, dual_context: ssl.SSLContext) -> None:
    async with tls_server(dual_context) as server:
        outcome = await exchange(server.port, client_ssl_context(pki))
    assert outcome.version == "TLSv1.3"


async def test_ec_only_server_refuses_rsa_only_client(pki: PkiFiles) -> None:
    # Why both certificates are loaded: each charge point may only have one
    # of the two Whitepaper suite pairs.
    context = build_server_ssl_context([pki.server_ec.pair])
    async with tls_server(context) as server:
        with pytest.raises(REFUSED):
            await exchange(server.port, tls12_client(pki, ":".join(WHITEPAPER_RSA)))


# --------------------------------------------------------------------------
# Protocol versions
# --------------------------------------------------------------------------


def tls11_client(pki: PkiFiles) -> ssl.SSLContext:
    context = client_ssl_context(pki)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.1, which is exactly what we need here.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    # OpenSSL 3 allows TLS < 1.2 only at security level 0.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def legacy_server_context(pki: PkiFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(*pki.server_rsa.pair)
    return context


async def test_tls11_client_works_against_a_legacy_server(pki: PkiFiles) -> None:
    # Control for the next test: the TLS 1.1 client itself is functional.
    async with tls_server(legacy_server_context(pki)) as server:
        outcome = await exchange(server.port, tls11_client(pki))
    assert outcome.version == "TLSv1.1"


async def test_tls11_client_is_refused(pki: PkiFiles, dual_context: ssl.SSLContext) -> None:
    # The server answers a protocol_version alert and drops the connection;
    # depending on timing the client sees the alert or the reset.
    async with tls_server(dual_context) as server:
        with pytest.raises(REFUSED):
            await exchange(server.port, tls11_client(pki))


# --------------------------------------------------------------------------
# Client certificates (security profile 3)
# --------------------------------------------------------------------------


@pytest.fixture
def mtls_context(pki: PkiFiles) -> ssl.SSLContext:
    return build_server_ssl_context(
        [pki.server_rsa.pair, pki.server_ec.pair],
        client_ca_file=str(pki.ca.cert_path),
        require_client_certificate=True,
    )


@pytest.fixture
def optional_mtls_context(pki: PkiFiles) -> ssl.SSLContext:
    return build_server_ssl_context(
        [pki.server_rsa.pair, pki.server_ec.pair], client_ca_file=str(pki.ca.cert_path)
    )


MAX_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("max_version", MAX_VERSIONS, ids=["tls12", "tls13"])
async def test_required_client_certificate_accepted_and_cn_readable(
    pki: PkiFiles, mtls_context: ssl.SSLContext, max_version: ssl.TLSVersion
) -> None:
    client = client_ssl_context(pki, certificate=pki.client, maximum_version=max_version)
    async with tls_server(mtls_context) as server:
        await exchange(server.port, client)
        cn = await asyncio.wait_for(server.common_names.get(), TIMEOUT)
    assert cn == pki.charge_point_id


@pytest.mark.parametrize("max_version", MAX_VERSIONS, ids=["tls12", "tls13"])
async def test_required_client_certificate_missing_is_refused(
    pki: PkiFiles, mtls_context: ssl.SSLContext, max_version: ssl.TLSVersion
) -> None:
    client = client_ssl_context(pki, maximum_version=max_version)
    async with tls_server(mtls_context) as server:
        with pytest.raises(REFUSED):
            await exchange(server.port, client)
        assert server.common_names.empty()


@pytest.mark.parametrize("max_version", MAX_VERSIONS, ids=["tls12", "tls13"])
async def test_client_certificate_from_other_ca_is_refused(
    pki: PkiFiles, mtls_context: ssl.SSLContext, max_version: ssl.TLSVersion
) -> None:
    client = client_ssl_context(pki, certificate=pki.foreign_client, maximum_version=max_version)
    async with tls_server(mtls_context) as server:
        with pytest.raises(REFUSED):
            await exchange(server.port, client)
        assert server.common_names.empty()


async def test_optional_client_certificate(
    pki: PkiFiles, optional_mtls_context: ssl.SSLContext
) -> None:
    async with tls_server(optional_mtls_context) as server:
        # Profile 2 charge point on the same listener: no certificate.
        await exchange(server.port, client_ssl_context(pki))
        assert await asyncio.wait_for(server.common_names.get(), TIMEOUT) is None
        # Profile 3 charge point: verified certificate, CN available.
        await exchange(server.port, client_ssl_context(pki, certificate=pki.client))
        assert await asyncio.wait_for(server.common_names.get(), TIMEOUT) == pki.charge_point_id
        # A certificate that is sent must still verify.
        with pytest.raises(REFUSED):
            await exchange(server.port, client_ssl_context(pki, certificate=pki.foreign_client))


async def test_without_client_ca_no_common_name_is_trusted(
    pki: PkiFiles, dual_context: ssl.SSLContext
) -> None:
    # Without a client CA nothing is verified, so no CN may be reported.
    async with tls_server(dual_context) as server:
        await exchange(server.port, client_ssl_context(pki, certificate=pki.foreign_client))
        assert await asyncio.wait_for(server.common_names.get(), TIMEOUT) is None


# --------------------------------------------------------------------------
# Context settings and configuration errors
# --------------------------------------------------------------------------


def test_context_settings(pki: PkiFiles, dual_context: ssl.SSLContext) -> None:
    assert dual_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert dual_context.verify_mode == ssl.CERT_NONE
    tls12 = {c["name"] for c in dual_context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(TLS12_CIPHERS)
    assert set(WHITEPAPER_ECDSA + WHITEPAPER_RSA) <= tls12
    tls13 = {c["name"] for c in dual_context.get_ciphers() if c["protocol"] == "TLSv1.3"}
    assert tls13  # left at OpenSSL defaults


def test_verify_modes(mtls_context: ssl.SSLContext, optional_mtls_context: ssl.SSLContext) -> None:
    assert mtls_context.verify_mode == ssl.CERT_REQUIRED
    assert optional_mtls_context.verify_mode == ssl.CERT_OPTIONAL


def test_no_certificates_is_an_error() -> None:
    with pytest.raises(TLSConfigurationError, match="at least one"):
        build_server_ssl_context([])


def test_require_client_certificate_needs_ca(pki: PkiFiles) -> None:
    with pytest.raises(TLSConfigurationError, match="client_ca_file"):
        build_server_ssl_context([pki.server_ec.pair], require_client_certificate=True)


def test_missing_certfile_names_setting_and_file(pki: PkiFiles, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(TLSConfigurationError) as info:
        build_server_ssl_context([pki.server_ec.pair, (missing, str(pki.server_ec.key_path))])
    assert "certificates[1] certfile" in str(info.value)
    assert missing in str(info.value)


def test_missing_keyfile_names_setting_and_file(pki: PkiFiles, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope-key.pem")
    with pytest.raises(TLSConfigurationError, match=r"certificates\[0\] keyfile.*nope-key"):
        build_server_ssl_context([(str(pki.server_ec.cert_path), missing)])


def test_directory_instead_of_file(pki: PkiFiles, tmp_path: Path) -> None:
    with pytest.raises(TLSConfigurationError, match="file not found"):
        build_server_ssl_context([(str(tmp_path), str(pki.server_ec.key_path))])


def test_key_not_matching_certificate(pki: PkiFiles) -> None:
    with pytest.raises(TLSConfigurationError, match=r"certificates\[0\]: cannot load"):
        build_server_ssl_context([(str(pki.server_ec.cert_path), str(pki.server_rsa.key_path))])


def test_garbage_certificate(pki: PkiFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSConfigurationError, match="cannot load"):
        build_server_ssl_context([(str(garbage), str(pki.server_ec.key_path))])


def test_missing_client_ca_file(pki: PkiFiles, tmp_path: Path) -> None:
    missing = str(tmp_path / "ca.pem")
    with pytest.raises(TLSConfigurationError, match=r"client_ca_file: file not found"):
        build_server_ssl_context([pki.server_ec.pair], client_ca_file=missing)


def test_garbage_client_ca_file(pki: PkiFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSConfigurationError, match="client_ca_file: cannot load"):
        build_server_ssl_context([pki.server_ec.pair], client_ca_file=str(garbage))
