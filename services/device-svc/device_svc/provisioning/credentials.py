"""Device passwords: generated here, shown once (the fleet file), stored only as hashes."""

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import DeviceCredential
from device_svc.provisioning.mosquitto import mosquitto_hash

_hasher = PasswordHasher()


def generate_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def set_password(credential: DeviceCredential, password: str) -> None:
    credential.password_hash = hash_password(password)
    credential.broker_hash = mosquitto_hash(password)


async def broker_entries(session: AsyncSession, service_user: str, service_password: str) -> dict[str, str]:
    """Every active device's broker entry plus device-svc's own account."""
    rows = await session.execute(
        select(DeviceCredential.device_id, DeviceCredential.broker_hash).where(DeviceCredential.active.is_(True))
    )
    entries = {device_id: broker_hash for device_id, broker_hash in rows.all()}
    entries[service_user] = mosquitto_hash(service_password)
    return entries
