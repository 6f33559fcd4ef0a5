"""The development CA and the per-service certificates of the mesh.

Each service certificate names its service as a SPIFFE ID in a URI SAN
(spiffe://meshserve.local/<service>), so a server can authorise callers by who they are; the role's DNS
name (<service>.meshserve.local), which mesh clients check instead of the host they dial, so that one
certificate serves every replica and node of a role; and localhost names, for clients on the machine.
Keys are ECDSA P-256: small and quick to make.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.shared.tls import TlsFiles

TRUST_DOMAIN = "meshserve.local"
_CA_VALIDITY = datetime.timedelta(days=3650)
_LEAF_VALIDITY = datetime.timedelta(days=365)
# A certificate closer than this to expiry is issued again.
_RENEW_BEFORE = datetime.timedelta(days=7)
_LOCAL_NAMES = ("localhost",)
_LOCAL_ADDRESSES = ("127.0.0.1", "::1")


def spiffe_id(service: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/{service}"


def role_name(service: str) -> str:
    """The DNS name every certificate of the role carries, and that mesh clients check (channels.open_channel)."""
    return f"{service}.{TRUST_DOMAIN}"


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def create_ca(common_name: str = "meshserve development CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(ca: Issued, service: str, uri: str | None = None) -> Issued:
    """A certificate for one service, good for both serving and calling other services."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri or spiffe_id(service))]
    alt_names += [x509.DNSName(name) for name in (role_name(service), *_LOCAL_NAMES)]
    alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in _LOCAL_ADDRESSES]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(certificate, key)


def write_pem(issued: Issued, cert_path: Path, key_path: Path) -> None:
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Write the key private from the start, and replace atomically so a reader never sees half a file.
    temporary = key_path.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.write_bytes(key_bytes)
    temporary.replace(key_path)
    temporary = cert_path.with_suffix(".tmp")
    temporary.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    temporary.replace(cert_path)


def ensure_dev_certs(directory: Path, services: list[str]) -> dict[str, TlsFiles]:
    """Creates the CA and any missing, foreign or nearly expired service certificate; keeps the rest."""
    ca_cert, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    if not (ca_cert.exists() and ca_key.exists()) or _expiring(load_certificate(ca_cert)):
        write_pem(create_ca(), ca_cert, ca_key)
    ca = Issued(load_certificate(ca_cert), load_private_key(ca_key))
    files = {}
    for service in services:
        files[service] = identity = dev_identity(directory, service)
        if not (identity.cert.exists() and identity.key.exists()) or not _valid_leaf(
            load_certificate(identity.cert), ca.certificate, service
        ):
            write_pem(issue(ca, service), identity.cert, identity.key)
    return files


def rotate_certs(directory: Path, services: list[str]) -> dict[str, TlsFiles]:
    """Issues every service a new key and certificate from the same CA, in place.

    Running services take them up without a restart: mesh servers and the edge for every new connection,
    the OpenAI front within a second. Connections already open go on with the certificates they began
    with, which stay valid: the CA is the same, and nothing is revoked.
    """
    ca = Issued(load_certificate(directory / "ca.pem"), load_private_key(directory / "ca-key.pem"))
    files = {}
    for service in services:
        files[service] = identity = dev_identity(directory, service)
        write_pem(issue(ca, service), identity.cert, identity.key)
    return files


def dev_identity(directory: Path, service: str) -> TlsFiles:
    """Where ensure_dev_certs keeps a service's certificate, key and CA."""
    return TlsFiles(cert=directory / f"{service}.pem", key=directory / f"{service}-key.pem", ca=directory / "ca.pem")


def _valid_leaf(certificate: x509.Certificate, ca: x509.Certificate, service: str) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    # A certificate from before roles were named is issued again rather than refused by every peer.
    return role_name(service) in names.get_values_for_type(x509.DNSName) and not _expiring(certificate)


def _expiring(certificate: x509.Certificate) -> bool:
    return certificate.not_valid_after_utc - _now() < _RENEW_BEFORE


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
