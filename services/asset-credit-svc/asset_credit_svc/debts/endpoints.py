"""The user's unpaid rental fees and their payment through a channel (Alipay, WeChat Pay, bank card)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from asset_credit_svc.debts import service
from asset_credit_svc.debts.schemas import (
    DebtOut,
    DebtPaymentIn,
    DebtPaymentOut,
    DebtPaymentsOut,
    DebtPayParamsOut,
    DebtsOut,
)
from asset_credit_svc.models import DebtPayment
from kit.app import RuntimeDep
from kit.auth import CurrentUser, user_scope
from kit.db import ReadSessionDep, SessionDep
from kit.idempotency import IdempotencyKey

router = APIRouter(prefix="/v1/wallet", tags=["debts"], dependencies=[user_scope("wallet")])


def _out(payment: DebtPayment) -> DebtPaymentOut:
    return DebtPaymentOut(
        payment_id=payment.id,
        rental_id=payment.rental_id,
        channel=payment.channel,
        amount_fen=payment.amount_fen,
        status=payment.status,
        failure_reason=payment.failure_reason,
        settled_charge_id=payment.settled_charge_id,
        created_at=payment.created_at,
        completed_at=payment.completed_at,
    )


@router.get("/debts")
async def list_debts(user: CurrentUser, session: ReadSessionDep) -> DebtsOut:
    """Rentals whose fee the wallet could not cover and that are still unpaid (they block borrowing)."""
    debts = await service.owed(session, user.user_id)
    return DebtsOut(
        items=[
            DebtOut(
                rental_id=d.rental_id, charge_id=d.charge_id, amount_fen=d.amount_fen, reason=d.reason, since=d.since
            )
            for d in debts
        ],
        total_fen=sum(d.amount_fen for d in debts),
    )


@router.post("/debts/{rental_id}/payments", status_code=status.HTTP_201_CREATED)
async def pay_debt(
    rental_id: uuid.UUID,
    body: DebtPaymentIn,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    key: IdempotencyKey,
) -> DebtPaymentOut:
    """Pay a rental's unpaid fee through a channel: 404 `debt_not_found` when nothing is owed for it, 409
    `debt_covered_by_assets` when the user's assets now cover it. Then `POST /v1/wallet/debt-payments/{id}/pay`."""
    payment, created = await service.start_payment(
        session, runtime, user_id=user.user_id, key=key, rental_id=rental_id, channel=body.channel
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(payment)


@router.get("/debt-payments")
async def list_debt_payments(
    user: CurrentUser, session: ReadSessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> DebtPaymentsOut:
    return DebtPaymentsOut(items=[_out(p) for p in await service.payments(session, user.user_id, limit)])


@router.get("/debt-payments/{payment_id}")
async def get_debt_payment(payment_id: uuid.UUID, user: CurrentUser, session: ReadSessionDep) -> DebtPaymentOut:
    return _out(await service.get_payment(session, user.user_id, payment_id))


@router.post("/debt-payments/{payment_id}/pay")
async def debt_pay_params(
    payment_id: uuid.UUID, user: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep
) -> DebtPayParamsOut:
    """What the app hands to the channel to pay (the same order when asked again); 409 `debt_payment_not_pending`
    once paid, declined or expired, 503 `provider_unavailable` when the channel does not answer."""
    payment, order = await service.pay_params(session, runtime, user_id=user.user_id, payment_id=payment_id)
    return DebtPayParamsOut(
        payment_id=payment.id, channel=payment.channel, amount_fen=payment.amount_fen, pay_params=dict(order.pay_params)
    )
