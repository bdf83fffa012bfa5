"""Staff second factor: TOTP (RFC 6238, 30 s steps, 6 digits, what every authenticator app speaks)
through pyotp. Secrets are stored encrypted (AES-256-GCM, the administrator's id as associated data,
so a sealed secret copied to another account does not open), the key derived from ADMIN_TOTP_KEY."""

import base64
import hashlib
import hmac
import os
import time
from uuid import UUID

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

STEP_S = 30
_VERSION = "v1:"


class TotpSecrets:
    def __init__(self, key: str, issuer: str) -> None:
        self._aead = AESGCM(hashlib.sha256(b"pb-admin-totp\x00" + key.encode()).digest())
        self.issuer = issuer

    def seal(self, admin_id: UUID, secret: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), admin_id.bytes)
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, admin_id: UUID, stored: str) -> str:
        if not stored.startswith(_VERSION):
            raise ValueError("unknown TOTP secret format")
        raw = base64.urlsafe_b64decode(stored.removeprefix(_VERSION))
        try:
            return self._aead.decrypt(raw[:12], raw[12:], admin_id.bytes).decode()
        except InvalidTag:
            raise ValueError("the TOTP secret does not open with this key") from None

    def provisioning_uri(self, secret: str, login: str) -> str:
        """The otpauth:// URI an authenticator app reads (usually from a QR code)."""
        return pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=login, issuer_name=self.issuer)


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters: 160 bits, RFC 4226's recommended length


def matching_step(secret: str, code: str, *, after_step: int | None, now: float | None = None) -> int | None:
    """The time step whose code `code` is (one step of clock drift either way), or None. Steps at or
    before `after_step` (the last code accepted) never match, so a code works once."""
    totp = pyotp.TOTP(secret, interval=STEP_S)
    current = int((time.time() if now is None else now) // STEP_S)
    for step in (current - 1, current, current + 1):
        if after_step is not None and step <= after_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code.strip()):
            return step
    return None
