"""All SQL of debts: what a user owes (a rental whose last charge attempt failed, nothing collected, not
waived) and the payments of it through a channel. Never commits."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.models import Charge, ChargeStatus, DebtPayment, DebtPaymentStatus, WaivedRental


@dataclass(frozen=True)
class Debt:
    rental_id: uuid.UUID
    charge_id: uuid.UUID  # the last attempt, the one a payment settles
    amount_fen: int
    duration_seconds: int | None
    reason: str | None
    since: datetime


# Per rental the last charge attempt; owed when it failed for want of money (not because the rental was
# collected already), no attempt settled and support did not waive it. The same rule as finance's
# `owed_by_users`, without the attempts still waiting for a provider (those are not debts yet).
_OWED = """
SELECT rental_id, charge_id, amount_fen, duration_seconds, failure_reason, created_at FROM (
    SELECT DISTINCT ON (c.rental_id) c.rental_id, c.charge_id, c.amount_fen, c.duration_seconds,
           c.failure_reason, c.status, c.created_at
    FROM charges c
    WHERE c.user_id = :user_id
      AND (CAST(:rental_id AS uuid) IS NULL OR c.rental_id = CAST(:rental_id AS uuid))
      AND NOT EXISTS (SELECT 1 FROM charges s WHERE s.rental_id = c.rental_id AND s.status = 'settled')
      AND NOT EXISTS (SELECT 1 FROM waived_rentals w WHERE w.rental_id = c.rental_id)
    ORDER BY c.rental_id, c.created_at DESC, c.charge_id
) last
WHERE status = 'failed' AND failure_reason IS DISTINCT FROM :already
ORDER BY created_at
"""


async def owed(
    session: AsyncSession, user_id: uuid.UUID, already_charged: str, rental_id: uuid.UUID | None = None
) -> list[Debt]:
    rows = await session.execute(
        text(_OWED),
        {"user_id": user_id, "rental_id": None if rental_id is None else str(rental_id), "already": already_charged},
    )
    return [Debt(*row) for row in rows.all()]


async def lock_rental_charges(session: AsyncSession, rental_id: uuid.UUID) -> list[Charge]:
    """Every charge attempt of the rental, newest first, row-locked in one statement (so two payments of one
    rental, or a payment and a charge outcome, queue)."""
    stmt = (
        select(Charge)
        .where(Charge.rental_id == rental_id)
        .order_by(Charge.created_at.desc(), Charge.charge_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars())


async def is_waived(session: AsyncSession, rental_id: uuid.UUID) -> bool:
    stmt = select(WaivedRental.rental_id).where(WaivedRental.rental_id == rental_id)
    return (await session.execute(stmt)).first() is not None


async def claim(session: AsyncSession, values: dict[str, object]) -> bool:
    stmt = (
        insert(DebtPayment)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
        .returning(DebtPayment.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def by_key(session: AsyncSession, user_id: uuid.UUID, key: str) -> DebtPayment | None:
    stmt = select(DebtPayment).where(DebtPayment.user_id == user_id, DebtPayment.idempotency_key == key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get(session: AsyncSession, payment_id: uuid.UUID, *, for_update: bool = False) -> DebtPayment | None:
    stmt = select(DebtPayment).where(DebtPayment.id == payment_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def of_user(session: AsyncSession, user_id: uuid.UUID, limit: int) -> list[DebtPayment]:
    stmt = (
        select(DebtPayment)
        .where(DebtPayment.user_id == user_id)
        .order_by(DebtPayment.created_at.desc(), DebtPayment.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def stale_pending(session: AsyncSession, older_than: datetime, limit: int) -> list[DebtPayment]:
    """Pending payments made before `older_than`, locked (others' locked rows skipped: one replica asks)."""
    stmt = (
        select(DebtPayment)
        .where(DebtPayment.status == DebtPaymentStatus.PENDING.value, DebtPayment.created_at < older_than)
        .order_by(DebtPayment.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


def is_settled(charges: list[Charge]) -> bool:
    return any(c.status == ChargeStatus.SETTLED.value for c in charges)
