"""The private CA, the broker certificate and device certificates from CSRs (kit/x509.py); the handshakes
against a real broker are in services/device-svc/tests and device-emulator/tests."""

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kit.x509 import (
    Authority,
    CsrRefused,
    build_crl,
    client_context,
    common_name,
    ensure_broker_files,
    issue_from_csr,
    make_csr,
    new_authority,
    new_key,
)


def test_broker_files_are_made_once_and_reissued_when_the_hosts_change(tmp_path: Path) -> None:
    files = ensure_broker_files(tmp_path, ["127.0.0.1", "localhost"])
    ca_before, server_before = files.ca_cert.read_bytes(), files.server_cert.read_bytes()
    assert oct(files.ca_key.stat().st_mode & 0o777) == "0o600"
    assert oct(files.server_key.stat().st_mode & 0o777) == "0o600"
    ensure_broker_files(tmp_path, ["127.0.0.1", "localhost"])
    assert (files.ca_cert.read_bytes(), files.server_cert.read_bytes()) == (ca_before, server_before)
    ensure_broker_files(tmp_path, ["127.0.0.1", "localhost", "broker.internal"])
    assert files.ca_cert.read_bytes() == ca_before
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert files.server_cert.read_bytes() != server_before
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.internal" in names.get_values_for_type(x509.DNSName)
    crl = x509.load_pem_x509_crl(files.crl.read_bytes())
    assert len(crl) == 0


def test_a_device_certificate_names_the_device_and_only_from_a_proper_csr() -> None:
    ca = new_authority("test CA")
    key = new_key()
    cert = issue_from_csr(ca, make_csr(key, "CAB-0001"), "CAB-0001")
    assert common_name(cert.subject) == "CAB-0001"
    cert.verify_directly_issued_by(ca.cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage

    with pytest.raises(CsrRefused, match="device id"):
        issue_from_csr(ca, make_csr(key, "CAB-0002"), "CAB-0001")
    with pytest.raises(CsrRefused, match="PEM"):
        issue_from_csr(ca, b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n", "CAB-0001")
    with pytest.raises(CsrRefused, match="P-256"):
        issue_from_csr(ca, make_csr_any(ec.generate_private_key(ec.SECP384R1()), "CAB-0001"), "CAB-0001")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CsrRefused, match="2048"):
        issue_from_csr(ca, make_csr_any(weak, "CAB-0001"), "CAB-0001")


def make_csr_any(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: str) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization

    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_crl_lists_the_revoked_serials(tmp_path: Path) -> None:
    files = ensure_broker_files(tmp_path, ["127.0.0.1"])
    ca = Authority.load(files.ca_cert, files.ca_key)
    cert = issue_from_csr(ca, make_csr(new_key(), "PB-000001"), "PB-000001")
    crl = x509.load_pem_x509_crl(build_crl(ca, [(cert.serial_number, dt.datetime.now(dt.UTC))]))
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def test_the_client_context_verifies_the_broker(tmp_path: Path) -> None:
    files = ensure_broker_files(tmp_path, ["127.0.0.1"])
    context = client_context(files.ca_cert)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
