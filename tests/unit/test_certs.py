from pathlib import Path

from cryptography import x509

from services.shared.certs import create_ca, ensure_dev_certs, issue, spiffe_id, write_pem


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_service_certificates_carry_their_spiffe_id_and_chain_to_the_ca(tmp_path: Path) -> None:
    files = ensure_dev_certs(tmp_path, ["gateway", "inference"])
    ca = load(files["gateway"].ca)
    for service, tls in files.items():
        certificate = load(tls.cert)
        certificate.verify_directly_issued_by(ca)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id(service)]
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        assert oct(tls.key.stat().st_mode & 0o777) == "0o600"


def test_existing_certificates_are_kept(tmp_path: Path) -> None:
    first = ensure_dev_certs(tmp_path, ["gateway"])["gateway"].cert.read_bytes()
    assert ensure_dev_certs(tmp_path, ["gateway"])["gateway"].cert.read_bytes() == first


def test_a_certificate_from_another_ca_is_replaced(tmp_path: Path) -> None:
    ensure_dev_certs(tmp_path, ["gateway"])
    write_pem(issue(create_ca("other"), "gateway"), tmp_path / "gateway.pem", tmp_path / "gateway-key.pem")
    files = ensure_dev_certs(tmp_path, ["gateway"])
    load(files["gateway"].cert).verify_directly_issued_by(load(files["gateway"].ca))
