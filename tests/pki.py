"""Throw-away PKI for TLS tests: CAs, server and charge point certificates.

Everything is written as PEM files into a directory given by the caller, and
the paths are returned, because ``ssl`` only loads certificates from files.
Keys are RSA 2048 and EC P-256 so that generation stays fast.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_CHARGE_POINT_ID",
    "SERVER_HOSTS",
    "CertificateAuthority",
    "IssuedCertificate",
    "PkiFiles",
    "client_ssl_context",
    "create_ca",
    "create_pki",
    "issue_client_certificate",
    "issue_server_certificate",
]

DEFAULT_CHARGE_POINT_ID = "CP-001"
SERVER_HOSTS = ("localhost", "127.0.0.1")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    cert_path: Path
    key_path: Path
    certificate: x509.Certificate

    @property
    def pair(self) -> tuple[str, str]:
        """(certfile, keyfile) as ``build_server_ssl_context`` takes them."""
        return str(self.cert_path), str(self.key_path)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    name: str
    cert_path: Path
    certificate: x509.Certificate
    key: PrivateKey


@dataclass(frozen=True, slots=True)
class PkiFiles:
    directory: Path
    ca: CertificateAuthority
    other_ca: CertificateAuthority  # unrelated CA, for negative tests
    server_rsa: IssuedCertificate
    server_ec: IssuedCertificate
    charge_point_id: str
    client: IssuedCertificate  # CN = charge_point_id, signed by ca
    foreign_client: IssuedCertificate  # CN = charge_point_id, signed by other_ca


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}")


def _write_key(key: PrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)


def create_ca(directory: Path, name: str, *, key_type: str = "ec") -> CertificateAuthority:
    """Self-signed root CA; writes ``<name>-ca.pem``."""
    key = _new_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Test Root CA")])
    not_before, not_after = _validity()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}-ca.pem"
    _write_cert(certificate, cert_path)
    return CertificateAuthority(name=name, cert_path=cert_path, certificate=certificate, key=key)


def _issue(
    ca: CertificateAuthority,
    directory: Path,
    stem: str,
    *,
    common_name: str,
    key_type: str,
    usage: x509.ObjectIdentifier,
    san: Sequence[x509.GeneralName] = (),
) -> IssuedCertificate:
    key = _new_key(key_type)
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    certificate = builder.sign(ca.key, hashes.SHA256())
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}-key.pem"
    _write_cert(certificate, cert_path)
    _write_key(key, key_path)
    return IssuedCertificate(cert_path=cert_path, key_path=key_path, certificate=certificate)


def issue_server_certificate(
    ca: CertificateAuthority,
    directory: Path,
    *,
    key_type: str,
    hosts: Sequence[str] = SERVER_HOSTS,
) -> IssuedCertificate:
    """Server certificate (RSA or EC) with ``hosts`` as DNS/IP SANs."""
    san: list[x509.GeneralName] = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    return _issue(
        ca,
        directory,
        f"server-{key_type}",
        common_name=hosts[0],
        key_type=key_type,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=san,
    )


def issue_client_certificate(
    ca: CertificateAuthority,
    directory: Path,
    charge_point_id: str,
    *,
    key_type: str = "ec",
) -> IssuedCertificate:
    """Charge point certificate: subject CN = the charge point id."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in charge_point_id)
    return _issue(
        ca,
        directory,
        f"client-{ca.name}-{safe}",
        common_name=charge_point_id,
        key_type=key_type,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )


def create_pki(directory: Path, charge_point_id: str = DEFAULT_CHARGE_POINT_ID) -> PkiFiles:
    """The whole test PKI in ``directory``."""
    ca = create_ca(directory, "kilowatt")
    other_ca = create_ca(directory, "other")
    return PkiFiles(
        directory=directory,
        ca=ca,
        other_ca=other_ca,
        server_rsa=issue_server_certificate(ca, directory, key_type="rsa"),
        server_ec=issue_server_certificate(ca, directory, key_type="ec"),
        charge_point_id=charge_point_id,
        client=issue_client_certificate(ca, directory, charge_point_id),
        foreign_client=issue_client_certificate(other_ca, directory, charge_point_id),
    )


def client_ssl_context(
    pki: PkiFiles,
    *,
    certificate: IssuedCertificate | None = None,
    ciphers: str | None = None,
    maximum_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A charge point's TLS context trusting the test CA.

    ``ciphers`` restricts the TLS 1.2 suites (set ``maximum_version`` to
    TLS 1.2 too, or TLS 1.3 will be negotiated regardless).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.cert_path))
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if maximum_version is not None:
        context.maximum_version = maximum_version
    if certificate is not None:
        context.load_cert_chain(str(certificate.cert_path), str(certificate.key_path))
    return context
