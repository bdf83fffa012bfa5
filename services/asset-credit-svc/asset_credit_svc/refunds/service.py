"""Refunding part of what a rental cost: platform revenue back to the user's wallet, once per
refund id, and never more than what the user paid for the rental minus earlier refunds."""

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.math import LedgerError
from asset_credit_svc.models import Charge, ChargeStatus, Refund, RefundStatus, TransactionKind
from contracts.events import RefundRequested, RefundSettled
from kit.app import Runtime

log = logging.getLogger(__name__)

EXCEEDS_COLLECTED = "exceeds_collected"
INVALID_AMOUNT = "invalid_amount"
LEDGER_REFUSED = "ledger_refused"


async def refundable_fen(session: AsyncSession, rental_id: uuid.UUID, user_id: uuid.UUID) -> int:
    # What the user paid (balance or provider): what coupons, cards and red packets covered is
    # not refunded as money.
    paid = Charge.amount_fen - Charge.card_fen - Charge.coupon_fen - Charge.red_packet_fen
    collected = (
        await session.execute(
            select(func.coalesce(func.sum(paid), 0)).where(
                Charge.rental_id == rental_id, Charge.user_id == user_id, Charge.status == ChargeStatus.SETTLED.value
            )
        )
    ).scalar_one()
    refunded = (
        await session.execute(
            select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
                Refund.rental_id == rental_id, Refund.status == RefundStatus.SETTLED.value
            )
        )
    ).scalar_one()
    return int(collected) - int(refunded)


async def refund(session: AsyncSession, runtime: Runtime, request: RefundRequested, source_event_id: uuid.UUID) -> str:
    """Returns `settled`, `failed` or `duplicate`."""
    claimed = (
        await session.execute(
            insert(Refund)
            .values(
                refund_id=request.refund_id,
                rental_id=request.rental_id,
                user_id=request.user_id,
                amount_fen=max(request.amount_fen, 1),
                reason=request.reason[:200],
                status=RefundStatus.PENDING.value,
                source_event_id=source_event_id,
                created_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing(index_elements=["refund_id"])
            .returning(Refund.refund_id)
        )
    ).scalar_one_or_none()
    if claimed is None:
        log.info("refund already handled; nothing changes", extra={"refund_id": str(request.refund_id)})
        return "duplicate"
    if request.amount_fen <= 0:
        return await _fail(session, request, INVALID_AMOUNT)
    # Serialize refunds of one rental: the wallet's row lock is taken by the posting below, but
    # the "how much is left" check must see earlier refunds of the same rental.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"refund:{request.rental_id}"))))
    if request.amount_fen > await refundable_fen(session, request.rental_id, request.user_id):
        log.error(
            "refund above what was collected for the rental; refused",
            extra={"refund_id": str(request.refund_id), "rental_id": str(request.rental_id)},
        )
        return await _fail(session, request, EXCEEDS_COLLECTED)
    wallet = ledger.user_balance(request.user_id)
    try:
        posted = await ledger.post(
            session,
            kind=TransactionKind.REFUND.value,
            reference=f"refund:{request.refund_id}",
            legs=[(ledger.PLATFORM_REVENUE, -request.amount_fen), (wallet, request.amount_fen)],
        )
    except LedgerError as exc:
        log.error("refund refused by the ledger", extra={"refund_id": str(request.refund_id), "error": str(exc)})
        return await _fail(session, request, LEDGER_REFUSED)
    if posted is None:  # cannot happen: the refund id was claimed above
        raise RuntimeError(f"refund {request.refund_id} claimed but already posted")
    await session.execute(
        update(Refund)
        .where(Refund.refund_id == request.refund_id)
        .values(status=RefundStatus.SETTLED.value, transaction_id=posted.id)
    )
    await runtime.publish(
        session,
        RefundSettled(
            refund_id=request.refund_id,
            rental_id=request.rental_id,
            user_id=request.user_id,
            amount_fen=request.amount_fen,
            balance_fen=posted.balance_after(wallet),
            settled_at=datetime.now(UTC),
        ),
        key=str(request.user_id),
    )
    log.info("refund settled", extra={"refund_id": str(request.refund_id), "amount_fen": request.amount_fen})
    return "settled"


async def _fail(session: AsyncSession, request: RefundRequested, reason: str) -> str:
    await session.execute(
        update(Refund)
        .where(Refund.refund_id == request.refund_id)
        .values(status=RefundStatus.FAILED.value, failure_reason=reason)
    )
    return "failed"
