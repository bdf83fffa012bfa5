"""A deregistered user (`user.user.deregistered`) is forgotten here in the event's own transaction; a
redelivered event finds nothing left to change."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import UserDeregistered
from device_svc.erasure import repository as repo

log = logging.getLogger(__name__)


async def on_user_deregistered(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, UserDeregistered)
    banks = await repo.forget_user(session, data.user_id)
    log.info("deregistered user forgotten", extra={"user_id": str(data.user_id), "bank_positions": len(banks)})
