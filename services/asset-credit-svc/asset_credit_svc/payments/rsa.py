"""SHA256withRSA (PKCS#1 v1.5), base64: the signature both Alipay (RSA2) and WeChat Pay v3 use."""

import base64
import binascii
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """A PEM public key, or the public key of a PEM certificate."""
    key = (
        x509.load_pem_x509_certificate(pem).public_key()
        if b"BEGIN CERTIFICATE" in pem
        else serialization.load_pem_public_key(pem)
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def read_private_key(path: Path) -> rsa.RSAPrivateKey:
    return load_private_key(path.read_bytes())


def read_public_key(path: Path) -> rsa.RSAPublicKey:
    return load_public_key(path.read_bytes())


def sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(key: rsa.RSAPublicKey, message: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
