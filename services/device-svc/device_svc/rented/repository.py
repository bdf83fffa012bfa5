from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import PositionConsent

# The renter of a bank is the user of its latest successful eject, while the bank is still rented.
_RENTED_BY = text(
    """
    SELECT b.id, b.battery_pct, b.has_module, b.lat, b.lon, b.position_at, c.rental_id
      FROM commands c JOIN banks b ON b.id = c.bank_id
     WHERE c.user_id = :user_id AND c.status = 'succeeded' AND b.state = 'rented'
       AND NOT EXISTS (SELECT 1 FROM commands later
                        WHERE later.bank_id = c.bank_id AND later.status = 'succeeded'
                          AND later.completed_at > c.completed_at)
     ORDER BY c.completed_at DESC
     LIMIT 1
    """
)


async def rented_by(session: AsyncSession, user_id: UUID) -> Any | None:
    return (await session.execute(_RENTED_BY, {"user_id": user_id})).first()


async def consent(session: AsyncSession, user_id: UUID) -> PositionConsent | None:
    return await session.get(PositionConsent, user_id)


async def set_consent(session: AsyncSession, user_id: UUID, granted: bool, at: datetime) -> None:
    stmt = insert(PositionConsent).values(user_id=user_id, granted=granted, changed_at=at)
    update = {"granted": granted, "changed_at": at}
    await session.execute(stmt.on_conflict_do_update(index_elements=[PositionConsent.user_id], set_=update))
