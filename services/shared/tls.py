"""Transport credentials. Servers require a client certificate from the mesh CA; plaintext only on request.

Server credentials reload: on each new connection grpc asks whether the files changed, so certificates
replaced on disk are used without a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate chain, its private key, and the CA that peers' certificates must chain to."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()

    def version(self) -> tuple[int, ...]:
        return tuple(path.stat().st_mtime_ns for path in (self.cert, self.key, self.ca))


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    loaded = {"version": files.version()}

    def configuration(cert: bytes, key: bytes, ca: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def changed_configuration() -> grpc.ServerCertificateConfiguration | None:
        try:
            version = files.version()
            if version == loaded["version"]:
                return None
            replaced = matching_files(files)
        except OSError as error:
            # Mid-replacement: keep serving with the certificates already loaded.
            log.warning("could not reload certificates: %s", error)
            return None
        if replaced is None:
            # Between the key's replacement and the certificate's: try again at the next connection.
            return None
        loaded["version"] = version
        log.info("reloaded certificates from %s", files.cert)
        return configuration(*replaced)

    return grpc.dynamic_ssl_server_credentials(
        configuration(*files.read()), changed_configuration, require_client_authentication=True
    )


def matching_files(files: TlsFiles) -> tuple[bytes, bytes, bytes] | None:
    """The certificate, key and CA, read once; None while the key is not the certificate's, as for a moment
    while a rotation replaces the two files. Raises OSError for a file that cannot be read."""
    cert, key, ca = files.read()
    return (cert, key, ca) if _pair_matches(cert, key) else None


def _pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return False
    return certificate.public_key().public_numbers() == key.public_key().public_numbers()


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
