"""All SQL on rentals. Never commits (flush is fine)."""

from datetime import datetime
from uuid import UUID

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc.models import OPEN_STATES, Rental, RentalState


async def add(session: AsyncSession, rental: Rental) -> None:
    session.add(rental)
    await session.flush()


async def get(session: AsyncSession, rental_id: UUID, *, for_update: bool = False) -> Rental | None:
    stmt = select(Rental).where(Rental.id == rental_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_own(session: AsyncSession, user_id: UUID, rental_id: UUID) -> Rental | None:
    stmt = select(Rental).where(Rental.id == rental_id, Rental.user_id == user_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_idempotency_key(session: AsyncSession, user_id: UUID, key: str) -> Rental | None:
    stmt = select(Rental).where(Rental.user_id == user_id, Rental.idempotency_key == key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def open_for_user(session: AsyncSession, user_id: UUID) -> Rental | None:
    """The user's unlocking or active rental (newest first if the one-per-user rule is off)."""
    stmt = (
        select(Rental)
        .where(Rental.user_id == user_id, Rental.state.in_([s.value for s in OPEN_STATES]))
        .order_by(Rental.requested_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def active_for_bank(session: AsyncSession, bank_id: str, *, for_update: bool = True) -> Rental | None:
    stmt = select(Rental).where(Rental.bank_id == bank_id, Rental.state == RentalState.ACTIVE.value)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def history(
    session: AsyncSession, user_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None
) -> list[Rental]:
    stmt = select(Rental).where(Rental.user_id == user_id)
    if before is not None:
        stmt = stmt.where(tuple_(Rental.requested_at, Rental.id) < tuple_(*before))
    stmt = stmt.order_by(Rental.requested_at.desc(), Rental.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def stale_unlocking(session: AsyncSession, older_than: datetime, *, limit: int = 100) -> list[Rental]:
    """Unlocking rentals requested before `older_than`, locked (others' locked rows are skipped)."""
    stmt = (
        select(Rental)
        .where(Rental.state == RentalState.UNLOCKING.value, Rental.requested_at < older_than)
        .order_by(Rental.requested_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())
