"""Server-side TLS configuration for security profiles 2 and 3.

OCPP 1.6 Security Whitepaper §2 ("Secure connection setup"): TLS 1.2 or
later, and the central system must support the cipher suites

* TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
  (for an ECDSA server certificate), and
* TLS_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_256_GCM_SHA384
  (for an RSA server certificate).

Charge points are allowed to implement only one of the two pairs, so a
central system that wants to serve every charge point presents both an RSA
and an ECDSA certificate; OpenSSL picks the one matching the suite it
negotiates.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence

__all__ = [
    "TLS12_CIPHERS",
    "TLSConfigurationError",
    "build_server_ssl_context",
]

# TLS 1.2 suites, in server preference order (OpenSSL names).
#
# The four Whitepaper suites are all present. We also keep
# ECDHE-RSA-AES*-GCM: with an RSA certificate the mandatory TLS_RSA_* suites
# have no forward secrecy (a leaked server key decrypts every recorded
# session), so a charge point that also offers ECDHE-RSA gets that instead.
# The Whitepaper sets a minimum set to support, not a ceiling, and these are
# the same AEAD ciphers with a better key exchange. Plain RSA key exchange
# stays last, only for charge points that implement nothing else.
# TLS 1.3 suites are configured separately by OpenSSL and left at defaults
# (all of them are AEAD with forward secrecy).
TLS12_CIPHERS: tuple[str, ...] = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
)


class TLSConfigurationError(ValueError):
    """The TLS settings cannot be turned into a working server context."""


def build_server_ssl_context(
    certificates: Sequence[tuple[str, str]],
    *,
    client_ca_file: str | None = None,
    require_client_certificate: bool = False,
) -> ssl.SSLContext:
    """Build the ``SSLContext`` of the OCPP WebSocket listener.

    ``certificates`` holds (certfile, keyfile) PEM pairs; certfile may carry
    the intermediate chain after the leaf. Give at most one pair per key
    type (typically one RSA and one EC): OpenSSL keeps one certificate per
    key type, so a later pair of the same type replaces the earlier one.

    ``client_ca_file`` enables client certificates (security profile 3),
    verified against these CAs: required for every connection when
    ``require_client_certificate``, else optional (so profile 2 charge
    points can share the listener; :func:`kilowatt.gateway.auth.authenticate`
    then decides per charge point).

    Raises :class:`TLSConfigurationError` naming the setting and file at
    fault.
    """
    if not certificates:
        raise TLSConfigurationError(
            "TLS needs at least one server certificate (certfile, keyfile) pair"
        )
    if require_client_certificate and client_ca_file is None:
        raise TLSConfigurationError(
            "require_client_certificate is set but no client_ca_file is configured"
        )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Security Whitepaper §2: TLS 1.2 is the minimum version.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(":".join(TLS12_CIPHERS))
    # Choose by our order above (forward secrecy first), not the client's.
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # Client-initiated renegotiation is a DoS lever and has no use here.
    context.options |= ssl.OP_NO_RENEGOTIATION

    for index, (certfile, keyfile) in enumerate(certificates):
        setting = f"certificates[{index}]"
        _require_file(certfile, f"{setting} certfile")
        _require_file(keyfile, f"{setting} keyfile")
        try:
            context.load_cert_chain(certfile, keyfile)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise TLSConfigurationError(
                f"{setting}: cannot load certificate {certfile!r} with key {keyfile!r} "
                f"(not PEM, encrypted key, or key does not match certificate): {exc}"
            ) from exc

    if client_ca_file is not None:
        _require_file(client_ca_file, "client_ca_file")
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise TLSConfigurationError(
                f"client_ca_file: cannot load CA certificates from {client_ca_file!r}: {exc}"
            ) from exc
        # With CERT_OPTIONAL a certificate that is sent must still verify;
        # only its absence is tolerated.
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    return context


def _require_file(path: str, setting: str) -> None:
    # OpenSSL reports a missing file as a bare errno/"PEM lib" error without
    # the name; check first so the message says which setting is wrong.
    if not os.path.isfile(path):
        raise TLSConfigurationError(f"{setting}: file not found: {path!r}")
    if not os.access(path, os.R_OK):
        raise TLSConfigurationError(f"{setting}: file is not readable: {path!r}")
