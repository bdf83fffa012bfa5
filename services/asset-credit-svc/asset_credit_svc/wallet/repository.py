"""The user's money movements in and out of the wallet: top-ups (in, through a provider), the parts of
withdrawals (out, back through the provider order the money came in by) and rental refunds (in, from
platform revenue to the balance) and rental fees paid later through a channel (in, through that channel; the
money then pays the rental). One keyset-paged query over the four tables, newest first."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.models import DebtPayment, Refund, RefundStatus, TopUp, Withdrawal, WithdrawalPart

TOP_UP = "top_up"
WITHDRAWAL = "withdrawal"
REFUND = "refund"
DEBT_PAYMENT = "debt_payment"
KINDS = (TOP_UP, WITHDRAWAL, REFUND, DEBT_PAYMENT)
# A rental refund goes to the balance, not to a provider.
BALANCE_CHANNEL = "balance"


@dataclass(frozen=True)
class MovementRow:
    id: uuid.UUID
    kind: str
    amount_fen: int
    channel: str
    status: str
    created_at: datetime
    completed_at: datetime | None
    failure_reason: str | None
    # The top-up, the withdrawal the part belongs to, the refunded rental, or the rental a debt payment paid.
    reference_id: uuid.UUID


def _top_ups(user_id: uuid.UUID) -> Select[*tuple[Any, ...]]:
    return select(
        TopUp.id.label("id"),
        literal(TOP_UP).label("kind"),
        TopUp.amount_fen.label("amount_fen"),
        TopUp.channel.label("channel"),
        TopUp.status.label("status"),
        TopUp.created_at.label("created_at"),
        TopUp.completed_at.label("completed_at"),
        TopUp.failure_reason.label("failure_reason"),
        TopUp.id.label("reference_id"),
    ).where(TopUp.user_id == user_id)


def _withdrawal_parts(user_id: uuid.UUID) -> Select[*tuple[Any, ...]]:
    return (
        select(
            WithdrawalPart.id.label("id"),
            literal(WITHDRAWAL).label("kind"),
            (-WithdrawalPart.amount_fen).label("amount_fen"),
            WithdrawalPart.channel.label("channel"),
            WithdrawalPart.status.label("status"),
            WithdrawalPart.created_at.label("created_at"),
            WithdrawalPart.completed_at.label("completed_at"),
            literal(None).label("failure_reason"),
            WithdrawalPart.withdrawal_id.label("reference_id"),
        )
        .join(Withdrawal, Withdrawal.id == WithdrawalPart.withdrawal_id)
        .where(Withdrawal.user_id == user_id)
    )


def _refunds(user_id: uuid.UUID) -> Select[*tuple[Any, ...]]:
    return select(
        Refund.refund_id.label("id"),
        literal(REFUND).label("kind"),
        Refund.amount_fen.label("amount_fen"),
        literal(BALANCE_CHANNEL).label("channel"),
        Refund.status.label("status"),
        Refund.created_at.label("created_at"),
        case((Refund.status == RefundStatus.SETTLED.value, Refund.created_at), else_=None).label("completed_at"),
        Refund.failure_reason.label("failure_reason"),
        Refund.rental_id.label("reference_id"),
    ).where(Refund.user_id == user_id)


def _debt_payments(user_id: uuid.UUID) -> Select[*tuple[Any, ...]]:
    return select(
        DebtPayment.id.label("id"),
        literal(DEBT_PAYMENT).label("kind"),
        DebtPayment.amount_fen.label("amount_fen"),
        DebtPayment.channel.label("channel"),
        DebtPayment.status.label("status"),
        DebtPayment.created_at.label("created_at"),
        DebtPayment.completed_at.label("completed_at"),
        DebtPayment.failure_reason.label("failure_reason"),
        DebtPayment.rental_id.label("reference_id"),
    ).where(DebtPayment.user_id == user_id)


async def movements(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    kinds: tuple[str, ...],
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[MovementRow]:
    parts = {TOP_UP: _top_ups, WITHDRAWAL: _withdrawal_parts, REFUND: _refunds, DEBT_PAYMENT: _debt_payments}
    every = union_all(*(parts[kind](user_id) for kind in kinds)).subquery()
    stmt = select(every)
    if before is not None:
        moment, ident = before
        older: ColumnElement[bool] = or_(
            every.c.created_at < moment, and_(every.c.created_at == moment, every.c.id < ident)
        )
        stmt = stmt.where(older)
    stmt = stmt.order_by(every.c.created_at.desc(), every.c.id.desc()).limit(limit)
    return [MovementRow(**row._mapping) for row in (await session.execute(stmt)).all()]
