"""SQL of a deregistered user's erasure. Never commits."""

import uuid

from sqlalchemy import delete, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import Command, PositionConsent, UserLightRequest

# A bank's stored position reported while this user held it (after their eject, and not since the bank is
# back in a cabinet) is where the user was: a bank in a cabinet takes the cabinet's place instead, any other
# (lost, sold to them, faulty outside) none. A bank rented by someone else now is theirs, untouched.
_FORGET_POSITIONS = text(
    """
    UPDATE banks b
       SET lat = CASE WHEN b.state = 'in_cabinet' THEN (SELECT c.lat FROM cabinets c WHERE c.id = b.cabinet_id) END,
           lon = CASE WHEN b.state = 'in_cabinet' THEN (SELECT c.lon FROM cabinets c WHERE c.id = b.cabinet_id) END
      FROM (SELECT bank_id, min(created_at) AS since FROM commands
             WHERE user_id = :user AND status = 'succeeded' GROUP BY bank_id) held
     WHERE b.id = held.bank_id
       AND b.state <> 'rented'
       AND b.lat IS NOT NULL
       AND b.position_at >= held.since
       AND NOT (b.state = 'in_cabinet' AND b.position_at > b.state_changed_at)
    RETURNING b.id
    """
)


async def forget_user(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """The user's position consent and light requests go, their banks' positions from their rentals are
    forgotten and their ejects no longer name them (the ejects stay: the fleet's record of each bank).
    Which banks lost a position."""
    banks = list((await session.execute(_FORGET_POSITIONS, {"user": user_id})).scalars())
    await session.execute(delete(PositionConsent).where(PositionConsent.user_id == user_id))
    await session.execute(delete(UserLightRequest).where(UserLightRequest.user_id == user_id))
    await session.execute(update(Command).where(Command.user_id == user_id).values(user_id=None))
    return banks
