from datetime import datetime
from uuid import UUID

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import DevMessage, VerificationCode


async def lock_destination(session: AsyncSession, destination: str) -> None:
    """Serialise code requests for one destination until the transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:d))"), {"d": f"code:{destination}"})


async def last_delivered_at(session: AsyncSession, destination: str) -> datetime | None:
    stmt = select(func.max(VerificationCode.created_at)).where(
        VerificationCode.destination == destination, VerificationCode.delivered.is_(True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def window_usage(
    session: AsyncSession, *, since: datetime, destination: str | None = None, client_ip: str | None = None
) -> tuple[int, datetime | None]:
    """How many codes were requested since `since` (for a destination or a client), and the oldest."""
    stmt = select(func.count(), func.min(VerificationCode.created_at)).where(VerificationCode.created_at >= since)
    if destination is not None:
        stmt = stmt.where(VerificationCode.destination == destination)
    if client_ip is not None:
        stmt = stmt.where(VerificationCode.client_ip == client_ip)
    count, oldest = (await session.execute(stmt)).one()
    return int(count), oldest


async def latest_open(session: AsyncSession, *, destination: str, purpose: str) -> VerificationCode | None:
    stmt = (
        select(VerificationCode)
        .where(
            VerificationCode.destination == destination,
            VerificationCode.purpose == purpose,
            VerificationCode.delivered.is_(True),
        )
        .order_by(VerificationCode.created_at.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).one_or_none()


async def consume(session: AsyncSession, code_id: UUID, *, now: datetime, max_attempts: int) -> bool:
    stmt = (
        update(VerificationCode)
        .where(
            VerificationCode.id == code_id,
            VerificationCode.consumed_at.is_(None),
            VerificationCode.attempts < max_attempts,
            VerificationCode.expires_at > now,
        )
        .values(consumed_at=now)
        .returning(VerificationCode.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def count_attempt(session: AsyncSession, code_id: UUID) -> None:
    await session.execute(
        update(VerificationCode).where(VerificationCode.id == code_id).values(attempts=VerificationCode.attempts + 1)
    )


async def dev_messages(session: AsyncSession, *, destination: str | None, limit: int) -> list[DevMessage]:
    stmt = select(DevMessage).order_by(DevMessage.id.desc()).limit(limit)
    if destination is not None:
        stmt = stmt.where(DevMessage.destination == destination)
    return list(await session.scalars(stmt))
