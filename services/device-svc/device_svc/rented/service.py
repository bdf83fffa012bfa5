from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.rented import repository as repo
from device_svc.rented.schemas import ConsentOut, Position, RentedBankOut
from kit.errors import NotFound


class NoRentedBank(NotFound):
    code = "no_rented_bank"
    title = "You are not renting a bank"


async def rented_bank(session: AsyncSession, user_id: UUID) -> RentedBankOut:
    row = await repo.rented_by(session, user_id)
    if row is None:
        raise NoRentedBank()
    consent = await repo.consent(session, user_id)
    granted = consent is not None and consent.granted
    position = None
    if granted and row.lat is not None and row.lon is not None and row.position_at is not None:
        position = Position(lat=row.lat, lon=row.lon, reported_at=row.position_at)
    return RentedBankOut(
        bank_id=row.id,
        rental_id=row.rental_id,
        battery_pct=row.battery_pct,
        has_module=row.has_module,
        position_consent=granted,
        position=position,
    )


async def get_consent(session: AsyncSession, user_id: UUID) -> ConsentOut:
    consent = await repo.consent(session, user_id)
    if consent is None:
        return ConsentOut(granted=False, changed_at=None)
    return ConsentOut(granted=consent.granted, changed_at=consent.changed_at)


async def set_consent(session: AsyncSession, user_id: UUID, granted: bool, now: datetime) -> ConsentOut:
    await repo.set_consent(session, user_id, granted, now)
    return ConsentOut(granted=granted, changed_at=now)
