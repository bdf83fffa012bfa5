"""device_certificates and device_crl (migration 0019)."""

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import DeviceCertificate, DeviceCrl


async def add(session: AsyncSession, certificate: DeviceCertificate) -> None:
    session.add(certificate)
    await session.flush()


async def revoke_device(session: AsyncSession, device_id: str, at: datetime) -> list[str]:
    """Revoke every valid certificate of the device; the serials revoked now."""
    result = await session.execute(
        update(DeviceCertificate)
        .where(DeviceCertificate.device_id == device_id, DeviceCertificate.revoked_at.is_(None))
        .values(revoked_at=at)
        .returning(DeviceCertificate.serial)
    )
    return list(result.scalars())


async def revoked(session: AsyncSession, valid_after: datetime) -> list[tuple[str, datetime]]:
    """(serial, revoked at) of revoked certificates not yet expired (an expired one is refused anyway)."""
    rows = await session.execute(
        select(DeviceCertificate.serial, DeviceCertificate.revoked_at).where(
            DeviceCertificate.revoked_at.is_not(None), DeviceCertificate.not_after > valid_after
        )
    )
    return [(serial, at) for serial, at in rows if at is not None]


async def of_device(session: AsyncSession, device_id: str) -> list[DeviceCertificate]:
    rows = await session.execute(
        select(DeviceCertificate).where(DeviceCertificate.device_id == device_id).order_by(DeviceCertificate.issued_at)
    )
    return list(rows.scalars())


async def save_crl(session: AsyncSession, pem: str, at: datetime) -> None:
    stmt = insert(DeviceCrl).values(id=1, pem=pem, updated_at=at)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[DeviceCrl.id], set_={"pem": pem, "updated_at": at})
    )


async def current_crl(session: AsyncSession) -> str | None:
    return (await session.execute(select(DeviceCrl.pem).where(DeviceCrl.id == 1))).scalar_one_or_none()
