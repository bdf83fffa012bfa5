"""Credit scores: rules move them (an on-time return up; an overdue return, a lost bank, an
unpaid rental down), each change recorded with its reason and source event, once per (source,
reason); admins adjust with an audit record. The level decides borrowing: at or above
`credit_no_deposit_min` no deposit is needed, below `credit_refuse_below` borrowing is refused.
Never commits."""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import String, cast, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.models import Charge, CreditChange, CreditScore
from asset_credit_svc.settings import Settings
from contracts.events import CreditChanged, RentalEnded
from kit.outbox import add_event

log = logging.getLogger(__name__)

SCORE_MIN, SCORE_MAX = 0, 1000


@dataclass(frozen=True)
class Standing:
    score: int
    level: str
    deposit_required: bool
    refusal_code: str | None
    refusal_detail: str | None


def level_of(settings: Settings, score: int) -> str:
    for name, floor in sorted(settings.credit_levels.items(), key=lambda item: -item[1]):
        if score >= floor:
            return name
    return "bad"


async def score_of(session: AsyncSession, settings: Settings, user_id: uuid.UUID) -> int:
    found = (
        await session.execute(select(CreditScore.score).where(CreditScore.user_id == user_id))
    ).scalar_one_or_none()
    return settings.credit_initial if found is None else found


async def standing(session: AsyncSession, settings: Settings, user_id: uuid.UUID, deposit_held_fen: int) -> Standing:
    score = await score_of(session, settings, user_id)
    deposit_required = score < settings.credit_no_deposit_min
    code: str | None = None
    detail: str | None = None
    if score < settings.credit_refuse_below:
        code = "credit_too_low"
        detail = f"Your credit score {score} is below {settings.credit_refuse_below}; borrowing is not possible"
    elif deposit_required and deposit_held_fen < settings.deposit_fen:
        code = "deposit_required"
        detail = f"With a credit score of {score}, pay the deposit of {settings.deposit_fen} fen to borrow"
    return Standing(score, level_of(settings, score), deposit_required, code, detail)


async def change(
    session: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    delta: int,
    *,
    reason: str,
    source: str,
    source_id: str,
    actor: str | None = None,
    note: str | None = None,
) -> CreditChange | None:
    """Apply one change (clamped to 0..1000) under the score's row lock; None when this
    (source id, reason) was already applied. Four statements and the outbox row (issue 9: the score is read
    fresh by the locking select itself, and the change's row is its own duplicate check)."""
    await session.execute(
        insert(CreditScore)
        .values(user_id=user_id, score=settings.credit_initial)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    current = (
        await session.execute(
            select(CreditScore)
            .where(CreditScore.user_id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    after = min(SCORE_MAX, max(SCORE_MIN, current.score + delta))
    record = (
        await session.execute(
            insert(CreditChange)
            .values(
                user_id=user_id,
                delta=after - current.score,
                score_after=after,
                reason=reason,
                source=source,
                source_id=source_id,
                actor=actor,
                note=note,
            )
            .on_conflict_do_nothing(constraint="uq_credit_changes_source_reason")
            .returning(CreditChange)
        )
    ).scalar_one_or_none()
    if record is None:
        return None
    log.info("credit changed", extra={"user_id": str(user_id), "delta": record.delta, "reason": reason})
    if record.delta == 0:
        return record  # at the bound already: recorded (once per source), but nothing changed to announce
    current.score = after
    current.updated_at = func.now()
    # Through the outbox in this transaction (analytics' user attributes, notify-svc's campaign audience).
    changed = CreditChanged(
        user_id=user_id,
        score=after,
        delta=record.delta,
        level=level_of(settings, after),
        deposit_free=after >= settings.credit_no_deposit_min,
        reason=reason,
        at=datetime.now(UTC),
    )
    await add_event(session, changed, key=str(user_id), producer=settings.service_name)
    await session.flush()
    return record


async def history(session: AsyncSession, user_id: uuid.UUID, limit: int) -> list[CreditChange]:
    stmt = select(CreditChange).where(CreditChange.user_id == user_id).order_by(CreditChange.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def on_rental_ended(session: AsyncSession, settings: Settings, data: RentalEnded) -> None:
    if data.purchased:
        delta, reason = settings.credit_lost_bank, "lost_bank"
    elif data.duration_seconds > settings.credit_overdue_after_s:
        delta, reason = settings.credit_overdue, "overdue_return"
    else:
        delta, reason = settings.credit_on_time_return, "on_time_return"
    # The rental id is the natural key: one rule per rental, whatever copy of the event.
    await change(session, settings, data.user_id, delta, reason=reason, source=data.type, source_id=str(data.rental_id))


async def on_unpaid(session: AsyncSession, settings: Settings, user_id: uuid.UUID, charge_id: uuid.UUID) -> None:
    await change(
        session,
        settings,
        user_id,
        settings.credit_unpaid_debt,
        reason="unpaid_debt",
        source="asset.charge.failed",
        source_id=str(charge_id),
    )


async def on_debt_waived(session: AsyncSession, settings: Settings, user_id: uuid.UUID, rental_id: uuid.UUID) -> None:
    """Support waived a rental's unpaid fee: the unpaid-debt penalty of its failed charges is taken
    back, once per charge (a waiver means the user does not owe it, so it must not weigh on them)."""
    charge_ids = select(cast(Charge.charge_id, String)).where(Charge.rental_id == rental_id)
    penalties = (
        await session.execute(
            select(CreditChange).where(
                CreditChange.user_id == user_id,
                CreditChange.reason == "unpaid_debt",
                CreditChange.source_id.in_(charge_ids),
            )
        )
    ).scalars()
    for penalty in list(penalties):
        await change(
            session,
            settings,
            user_id,
            -penalty.delta,
            reason="debt_waived",
            source="billing.debt.waived",
            source_id=penalty.source_id,
        )


async def by_source(session: AsyncSession, source_id: str, reason: str) -> CreditChange | None:
    stmt = select(CreditChange).where(CreditChange.source_id == source_id, CreditChange.reason == reason)
    return (await session.execute(stmt)).scalar_one_or_none()
