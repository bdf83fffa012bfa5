"""Settling a charge billing requested: debit the wallet once per charge id, or fail it.

The `charges` row is claimed first (its primary key is the charge id), so a second request for
the same charge, concurrent or later, waits for the first and then changes nothing.
"""

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.math import InsufficientFunds
from asset_credit_svc.models import Charge, ChargeStatus, TransactionKind
from contracts.events import ChargeFailed, ChargeRequested, ChargeSettled
from kit.app import Runtime

log = logging.getLogger(__name__)

INSUFFICIENT_BALANCE = "insufficient_balance"
INVALID_AMOUNT = "invalid_amount"


async def settle(session: AsyncSession, runtime: Runtime, request: ChargeRequested, source_event_id: uuid.UUID) -> str:
    """Returns `settled`, `failed` or `duplicate`."""
    claimed = (
        await session.execute(
            insert(Charge)
            .values(
                charge_id=request.charge_id,
                rental_id=request.rental_id,
                user_id=request.user_id,
                amount_fen=request.amount_fen,
                status=ChargeStatus.PENDING.value,
                source_event_id=source_event_id,
                created_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing(index_elements=["charge_id"])
            .returning(Charge.charge_id)
        )
    ).scalar_one_or_none()
    if claimed is None:
        log.info("charge already handled; nothing changes", extra={"charge_id": str(request.charge_id)})
        return "duplicate"

    wallet = ledger.user_balance(request.user_id)
    if request.amount_fen < 0:
        return await _fail(session, runtime, request, INVALID_AMOUNT)
    if request.amount_fen == 0:
        return await _settle(session, runtime, request, None, await ledger.balance_of(session, wallet))
    try:
        posted = await ledger.post(
            session,
            kind=TransactionKind.CHARGE.value,
            reference=f"charge:{request.charge_id}",
            legs=[(wallet, -request.amount_fen), (ledger.PLATFORM_REVENUE, request.amount_fen)],
        )
    except InsufficientFunds:
        return await _fail(session, runtime, request, INSUFFICIENT_BALANCE)
    if posted is None:  # cannot happen: the charge id was claimed above
        raise RuntimeError(f"charge {request.charge_id} claimed but already posted")
    return await _settle(session, runtime, request, posted.id, posted.balance_after(wallet))


async def _settle(
    session: AsyncSession,
    runtime: Runtime,
    request: ChargeRequested,
    transaction_id: uuid.UUID | None,
    balance_fen: int,
) -> str:
    await session.execute(
        update(Charge)
        .where(Charge.charge_id == request.charge_id)
        .values(status=ChargeStatus.SETTLED.value, balance_after_fen=balance_fen, transaction_id=transaction_id)
    )
    await runtime.publish(
        session,
        ChargeSettled(
            charge_id=request.charge_id,
            rental_id=request.rental_id,
            user_id=request.user_id,
            amount_fen=request.amount_fen,
            balance_fen=balance_fen,
            settled_at=datetime.now(UTC),
        ),
        key=str(request.user_id),
    )
    return "settled"


async def _fail(session: AsyncSession, runtime: Runtime, request: ChargeRequested, reason: str) -> str:
    await session.execute(
        update(Charge)
        .where(Charge.charge_id == request.charge_id)
        .values(status=ChargeStatus.FAILED.value, failure_reason=reason)
    )
    await runtime.publish(
        session,
        ChargeFailed(
            charge_id=request.charge_id,
            rental_id=request.rental_id,
            user_id=request.user_id,
            amount_fen=request.amount_fen,
            reason=reason,
        ),
        key=str(request.user_id),
    )
    log.info("charge failed", extra={"charge_id": str(request.charge_id), "reason": reason})
    return "failed"
