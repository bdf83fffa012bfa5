"""The user's deposit: state, pay, refund, history."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from asset_credit_svc.deposit import service
from asset_credit_svc.deposit.schemas import (
    DepositHistory,
    DepositOperationOut,
    DepositOut,
    DepositPayIn,
    DepositPayParamsOut,
)
from asset_credit_svc.models import DepositOperation
from asset_credit_svc.settings import Settings
from kit.app import RuntimeDep
from kit.auth import CurrentUser, user_scope
from kit.db import SessionDep
from kit.idempotency import IdempotencyKey

router = APIRouter(prefix="/v1/deposit", tags=["deposit"], dependencies=[user_scope("wallet")])


def _out(op: DepositOperation) -> DepositOperationOut:
    return DepositOperationOut(
        operation_id=op.id,
        kind=op.kind,
        amount_fen=op.amount_fen,
        channel=op.channel,
        status=op.status,
        source=op.source,
        failure_reason=op.failure_reason,
        created_at=op.created_at,
        completed_at=op.completed_at,
    )


def _settings(runtime: RuntimeDep) -> Settings:
    assert isinstance(runtime.settings, Settings)
    return runtime.settings


@router.get("")
async def get_deposit(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> DepositOut:
    return DepositOut(
        held_fen=await service.held_fen(session, user.user_id), required_fen=_settings(runtime).deposit_fen
    )


@router.post("/payments", status_code=status.HTTP_201_CREATED)
async def pay_deposit(
    body: DepositPayIn,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    key: IdempotencyKey,
) -> DepositOperationOut:
    """Pay the deposit through a provider (its signed notification completes it)."""
    operation, created = await service.pay(
        session,
        runtime,
        user_id=user.user_id,
        key=key,
        channel=body.channel,
        amount_fen=_settings(runtime).deposit_fen,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(operation)


@router.post("/payments/{payment_id}/pay")
async def pay_deposit_params(
    payment_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> DepositPayParamsOut:
    """What the user's app hands to the channel to pay a pending deposit payment (as for a top-up); 409
    `deposit_not_pending` once paid or failed, 503 `provider_unavailable` when the channel does not answer."""
    operation, order = await service.pay_params(session, runtime, user_id=user.user_id, payment_id=payment_id)
    return DepositPayParamsOut(operation_id=operation.id, channel=operation.channel, pay_params=dict(order.pay_params))


@router.post("/refunds", status_code=status.HTTP_201_CREATED)
async def refund_deposit(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    key: IdempotencyKey,
) -> DepositOperationOut:
    """Refund the whole deposit to the provider it was paid with (409 renting / owing / no_deposit)."""
    operation, created = await service.refund(session, runtime, user_id=user.user_id, key=key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(operation)


@router.get("/history")
async def deposit_history(
    user: CurrentUser, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> DepositHistory:
    return DepositHistory(items=[_out(op) for op in await service.history(session, user.user_id, limit)])
