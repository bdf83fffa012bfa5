"""The platform's firmware key (Ed25519: devices carry its public half and install only what it signed) and
the signed, expiring download links (kit.signed_urls) through which devices fetch images."""

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from contracts.mqtt import firmware_signed_bytes
from kit.signed_urls import UrlSigner

DOWNLOAD_PATH = "/v1/firmware"


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("FIRMWARE_SIGNING_KEY_FILE must hold an Ed25519 private key (PEM)")
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign_image(key: Ed25519PrivateKey, model: str, version: str, digest: str) -> str:
    """Base64 Ed25519 signature of (model, version, SHA-256), as FirmwareUpdate carries it."""
    return base64.b64encode(key.sign(firmware_signed_bytes(model, version, digest))).decode()


@dataclass(frozen=True)
class DownloadLinks:
    """Absolute links for devices: `<base><DOWNLOAD_PATH>/<image id>?exp=&sig=`."""

    signer: UrlSigner
    base_url: str

    @classmethod
    def make(cls, key: bytes, ttl_s: int, base_url: str) -> "DownloadLinks":
        return cls(UrlSigner(key, ttl_s, DOWNLOAD_PATH), base_url.rstrip("/"))

    def url(self, image_id: object, now: float) -> str:
        return self.base_url + self.signer.url(image_id, now)
