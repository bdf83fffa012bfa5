"""Deregistration (T/CA006-2018 6.1.3): refused while a rental is active or a fee unpaid; otherwise
the account ends at once (tokens revoked, phone/e-mail/user name freed so the number can register
again as a new user, `user.user.deregistered` sent so asset-credit refunds the deposit), and the
anonymisation job clears the remaining personal data after the retention period."""

import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import UserDeregistered
from user_svc.deregistration.projection import obligations
from user_svc.errors import DebtUnpaid, InvalidCredentials, RentalActive, UserNotFound
from user_svc.events import EventPublisher
from user_svc.models import EligibilityDecision, User, UserStatus
from user_svc.security import Passwords
from user_svc.sessions import service as sessions
from user_svc.settings import Settings

log = logging.getLogger(__name__)


def tombstone(user_id: UUID) -> str:
    return "~" + user_id.hex[:15]  # unique, fits the phone column, never a valid number


async def deregister(
    session: AsyncSession,
    user_id: UUID,
    *,
    password: str,
    passwords: Passwords,
    events: EventPublisher,
    settings: Settings,
) -> datetime:
    user = await session.get(User, user_id, with_for_update=True)
    if user is None or user.status == UserStatus.DEREGISTERED:
        raise UserNotFound()
    if not (await passwords.verify(user.password_hash, password)).ok:
        raise InvalidCredentials("The password is wrong")
    active, unpaid_fen = await obligations(session, user.id)
    if active:
        raise RentalActive()
    if unpaid_fen:
        raise DebtUnpaid(unpaid_fen=unpaid_fen)
    now = datetime.now(UTC)
    user.former_phone = user.phone
    user.phone = tombstone(user.id)
    user.email = None
    user.username = None
    user.status = UserStatus.DEREGISTERED
    user.deregistered_at = now
    user.updated_at = now
    await sessions.end_all(session, user.id, settings, events, reason="user_deregistered")
    await events.publish(session, UserDeregistered(user_id=user.id, at=now), key=str(user.id))
    log.info("user deregistered", extra={"user_id": str(user.id)})
    return now


async def anonymise_due(session: AsyncSession, *, now: datetime, retention_s: int) -> int:
    """Clear the personal data of users deregistered more than `retention_s` ago; how many. The number also
    leaves the eligibility decision of their registration (the decision stays, by user id)."""
    due = (
        await session.execute(
            select(User.id, User.former_phone)
            .where(
                User.status == UserStatus.DEREGISTERED,
                User.anonymised_at.is_(None),
                User.deregistered_at <= now - timedelta(seconds=retention_s),
            )
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not due:
        return 0
    ids = [user_id for user_id, _ in due]
    await session.execute(
        update(User)
        .where(User.id.in_(ids))
        .values(former_phone=None, display_name=None, birth_date=None, password_hash="", anonymised_at=now)
    )
    # through the phone index; only these users' decisions (someone else may have tried the number)
    await session.execute(
        update(EligibilityDecision)
        .where(
            EligibilityDecision.phone.in_([phone for _, phone in due if phone]), EligibilityDecision.user_id.in_(ids)
        )
        .values(phone="")
    )
    return len(due)


async def is_deregistered(session: AsyncSession, user_id: UUID) -> bool:
    status = (await session.execute(select(User.status).where(User.id == user_id))).scalar_one_or_none()
    return status == UserStatus.DEREGISTERED
