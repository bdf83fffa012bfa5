"""Device passwords: generated here, shown once (the fleet file), stored only as hashes.

A device password is 24 bytes from `secrets` (192 random bits), never chosen by a person. A slow
hash (Argon2, bcrypt) exists to make guessing a *weak* password expensive; against 2^192 candidates
guessing is hopeless at any hash speed, so a salted HMAC-SHA256 (2.5 µs of CPU) protects a
leaked table as well as Argon2id (211 ms of CPU and 64 MiB per hash), and lets thousands of
devices be provisioned per second. Hashes written by earlier versions (Argon2id) still verify; a
device's hash becomes the fast kind when its password is next set (rotation, re-provisioning)."""

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import DeviceCredential
from device_svc.provisioning import repository
from device_svc.provisioning.mosquitto import mosquitto_hash

PASSWORD_BYTES = 24  # 192 bits: the reason the fast hash below is sound
FAST_SCHEME = "$hmac-sha256$"
SALT_BYTES = 16
_legacy_argon2 = PasswordHasher()


def generate_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`$hmac-sha256$<base64 salt>$<base64 HMAC-SHA256(key=salt, password)>`."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hmac.new(salt, password.encode(), hashlib.sha256).digest()
    return f"{FAST_SCHEME}{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, password_hash: str) -> bool:
    if password_hash.startswith(FAST_SCHEME):
        try:
            salt_b64, digest_b64 = password_hash.removeprefix(FAST_SCHEME).split("$")
            salt = base64.b64decode(salt_b64, validate=True)
            expected = base64.b64decode(digest_b64, validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(hmac.new(salt, password.encode(), hashlib.sha256).digest(), expected)
    try:  # an Argon2 hash from before the fast scheme
        return _legacy_argon2.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Hashes:
    password_hash: str
    broker_hash: str


def hashes_for(password: str) -> Hashes:
    """Our copy (to verify a device) and the broker's password-file entry."""
    return Hashes(hash_password(password), mosquitto_hash(password))


def credential_row(device_id: str, kind: str, password: str, now: datetime) -> dict[str, Any]:
    """A `device_credentials` row for a bulk upsert (provisioning/repository.upsert_credentials)."""
    hashes = hashes_for(password)
    return {
        "device_id": device_id,
        "kind": kind,
        "password_hash": hashes.password_hash,
        "broker_hash": hashes.broker_hash,
        "rotated_at": now,
    }


HASH_WORKERS = max(2, min(4, os.cpu_count() or 2))


async def credential_rows(
    devices: Sequence[tuple[str, str]], now: datetime, *, workers: int = HASH_WORKERS
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """A new password for each (device id, kind) and its `device_credentials` row, hashed on `workers` threads:
    the broker's PBKDF2 entry (Mosquitto's KDF, 101 rounds of SHA-512) is most of a bulk import's CPU
    (0.54 s per 5,000 devices, measured) and OpenSSL computes it without Python's lock, so a batch is hashed
    in parallel and the event loop (device traffic) is not blocked meanwhile."""
    passwords = {device_id: generate_password() for device_id, _ in devices}

    def rows_of(part: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        return [credential_row(device_id, kind, passwords[device_id], now) for device_id, kind in part]

    if len(devices) < 64:
        return passwords, rows_of(devices)
    size = -(-len(devices) // workers)
    parts = [devices[start : start + size] for start in range(0, len(devices), size)]
    done = await asyncio.gather(*(asyncio.to_thread(rows_of, part) for part in parts))
    return passwords, [row for rows in done for row in rows]


def set_password(credential: DeviceCredential, password: str) -> None:
    hashes = hashes_for(password)
    credential.password_hash = hashes.password_hash
    credential.broker_hash = hashes.broker_hash


async def broker_entries(session: AsyncSession, service_user: str, service_password: str) -> dict[str, str]:
    """Every active device's broker entry plus device-svc's own account."""
    entries = await repository.active_broker_entries(session)
    entries[service_user] = mosquitto_hash(service_password)
    return entries
