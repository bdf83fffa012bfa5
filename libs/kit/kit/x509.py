"""Certificates for the device links: a private certificate authority, the MQTT broker's server
certificate, device client certificates issued from a CSR (the identity bound to the device id, as
the common name), certificate revocation lists, and the TLS contexts clients verify the broker with.

Keys are ECDSA P-256 (a handshake costs a fraction of RSA-2048's, which matters when a fleet reconnects
at once). Files are PEM; private keys are written 0600."""

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 397
DEVICE_DAYS = 825
# A server certificate this close to its end is issued again at the next start.
RENEW_BEFORE = dt.timedelta(days=30)
# How long a CRL stays valid: a broker refuses every client certificate once its CRL is past next_update,
# so it is rewritten at every start and every revocation, long before that.
CRL_DAYS = 30


class CsrRefused(ValueError):
    """A certificate signing request this authority does not sign (the reason is the message)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> "Authority":
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file}: not an EC private key")
        return cls(key, x509.load_pem_x509_certificate(cert_file.read_bytes()))


def new_authority(name: str, days: int = CA_DAYS) -> Authority:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def _leaf(
    ca: Authority,
    subject_cn: str,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )  # digitalSignature, keyEncipherment
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server(
    ca: Authority, hosts: Sequence[str], days: int = SERVER_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for the broker, valid for each of `hosts` (names or IP addresses)."""
    key = new_key()
    cert = _leaf(ca, hosts[0], key.public_key(), days, ExtendedKeyUsageOID.SERVER_AUTH, [_san(h) for h in hosts])
    return key, cert


def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """What a device sends to get a certificate: its public key and its id, signed with its key."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def issue_from_csr(ca: Authority, csr_pem: bytes, identity: str, days: int = DEVICE_DAYS) -> x509.Certificate:
    """A client certificate whose common name is `identity` (the device id, which the broker takes as the
    user name). The CSR must be well formed, signed by its own key (proof of possession), name that identity
    and carry a P-256 or RSA (2048 bits or more) key; anything else is refused with the reason."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CsrRefused("not a PEM certificate signing request") from exc
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature, NotImplementedError):  # an unsupported algorithm
        valid = False
    if not valid:
        raise CsrRefused("the request's signature does not verify")
    if common_name(csr.subject) != identity:
        raise CsrRefused(f"the request's common name must be the device id {identity!r}")
    public_key = csr.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise CsrRefused("an EC key must be on P-256")
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise CsrRefused("an RSA key must have at least 2048 bits")
    else:
        raise CsrRefused("the key must be EC P-256 or RSA")
    return _leaf(ca, identity, public_key, days, ExtendedKeyUsageOID.CLIENT_AUTH)


def build_crl(ca: Authority, revoked: Iterable[tuple[int, dt.datetime]], days: int = CRL_DAYS) -> bytes:
    """A PEM CRL listing `(serial number, revoked at)`."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically (a reader sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class BrokerFiles:
    """A broker's TLS material in one directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def crl(self) -> Path:
        return self.directory / "crl.pem"


def ensure_authority(cert_file: Path, key_file: Path, name: str) -> Authority:
    """The CA kept in these files, created when missing (the device CA client certificates are issued with)."""
    if cert_file.exists() and key_file.exists():
        return Authority.load(cert_file, key_file)
    ca = new_authority(name)
    write_private(key_file, key_pem(ca.key))
    cert_file.write_bytes(cert_pem(ca.cert))
    return ca


def ensure_broker_files(directory: Path, hosts: Sequence[str], ca_name: str = "pb private device CA") -> BrokerFiles:
    """Create what is missing: the CA (kept), a server certificate for `hosts` (issued again when the CA,
    the host list changed or it ends within RENEW_BEFORE) and an empty CRL. Returns the paths."""
    files = BrokerFiles(directory)
    if files.ca_cert.exists() and files.ca_key.exists():
        ca = Authority.load(files.ca_cert, files.ca_key)
    else:
        ca = new_authority(ca_name)
        write_private(files.ca_key, key_pem(ca.key))
        files.ca_cert.write_bytes(cert_pem(ca.cert))
    if _server_needs_issuing(files, ca, hosts):
        key, cert = issue_server(ca, hosts)
        write_private(files.server_key, key_pem(key))
        files.server_cert.write_bytes(cert_pem(cert))
    if not files.crl.exists():
        write_private(files.crl, build_crl(ca, []))
    return files


def _server_needs_issuing(files: BrokerFiles, ca: Authority, hosts: Sequence[str]) -> bool:
    if not (files.server_cert.exists() and files.server_key.exists()):
        return True
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    if cert.issuer != ca.cert.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return True
    try:
        cert.verify_directly_issued_by(ca.cert)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return True
    return set(names) != {_san(h) for h in hosts}


def client_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """A client's TLS context: verifies the broker against `ca_file` (chain and host name), TLS 1.2 or
    later, and presents a client certificate when one is given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return context
