import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert

from asset_credit_svc.charges.service import payment_method
from asset_credit_svc.credit import service as credit
from asset_credit_svc.models import PaymentMethod
from asset_credit_svc.settings import Settings
from asset_credit_svc.wallet import service
from asset_credit_svc.wallet.repository import KINDS, MovementRow
from asset_credit_svc.wallet.schemas import (
    AdminWalletOut,
    EntriesOut,
    EntryOut,
    MovementOut,
    MovementsOut,
    PaymentMethodIn,
    PaymentMethodOut,
    WalletOut,
)
from kit.app import RuntimeDep
from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.db import ReadSessionDep, SessionDep
from kit.errors import NotFound
from kit.inputs import INT64_MAX

router = APIRouter(prefix="/v1/wallet", tags=["wallet"], dependencies=[user_scope("wallet")])
admin_router = APIRouter(prefix="/v1/admin/users", tags=["wallet"])

Finance = Annotated[Principal, Depends(require_permission("ledger:read"))]
MovementKind = Literal["top_up", "withdrawal", "refund", "debt_payment"]


@router.get("", response_model=WalletOut)
async def get_wallet(user: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep) -> WalletOut:
    assert isinstance(runtime.settings, Settings)
    balance, red_packets, held = await service.summary(session, user.user_id)
    standing = await credit.standing(session, runtime.settings, user.user_id, held)
    return WalletOut(
        user_id=user.user_id,
        balance_fen=balance,
        red_packet_fen=red_packets,
        deposit_held_fen=held,
        credit_score=standing.score,
        credit_level=standing.level,
        borrow_refusal=standing.refusal_code,
        borrow_refusal_detail=standing.refusal_detail,
    )


@router.get("/entries", response_model=EntriesOut)
async def list_entries(
    user: CurrentUser,
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="entry_id cursor from `next_before`")] = None,
) -> EntriesOut:
    rows, next_before = await service.entries(session, user.user_id, limit=limit, before=before)
    return EntriesOut(
        items=[
            EntryOut(
                entry_id=r.entry_id,
                kind=r.kind,
                amount_fen=r.amount_fen,
                balance_after_fen=r.balance_after_fen,
                reference=r.reference,
                created_at=r.created_at,
            )
            for r in rows
        ],
        next_before=next_before,
    )


def _movements_out(rows: list[MovementRow], next_before: str | None) -> MovementsOut:
    return MovementsOut(
        items=[
            MovementOut(
                movement_id=r.id,
                kind=r.kind,
                amount_fen=r.amount_fen,
                channel=r.channel,
                status=r.status,
                created_at=r.created_at,
                completed_at=r.completed_at,
                failure_reason=r.failure_reason,
                reference_id=r.reference_id,
            )
            for r in rows
        ],
        next_before=next_before,
    )


@router.get("/movements", response_model=MovementsOut)
async def list_movements(
    user: CurrentUser,
    session: ReadSessionDep,
    kind: Annotated[list[MovementKind] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=200, description="cursor from `next_before`")] = None,
) -> MovementsOut:
    """The user's top-ups and withdrawals (and refunds of rental fees to the balance, and unpaid fees paid through
    a channel) with their status and channel, newest first; `kind` (repeatable) narrows the list."""
    kinds = tuple(k for k in KINDS if kind is None or k in kind)
    rows, next_before = await service.movements(session, user.user_id, kinds=kinds, limit=limit, before=before)
    return _movements_out(rows, next_before)


@admin_router.get("/{user_id}/wallet", response_model=AdminWalletOut)
async def admin_wallet(
    user_id: uuid.UUID,
    _: Finance,
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=200, description="cursor from `movements.next_before`")] = None,
) -> AdminWalletOut:
    """Finance's view of one user's wallet (also after deregistration): balances and money movements."""
    balance, red_packets, held = await service.summary(session, user_id)
    rows, next_before = await service.movements(session, user_id, kinds=KINDS, limit=limit, before=before)
    return AdminWalletOut(
        user_id=user_id,
        balance_fen=balance,
        red_packet_fen=red_packets,
        deposit_held_fen=held,
        movements=_movements_out(rows, next_before),
    )


class NoPaymentMethod(NotFound):
    code = "no_payment_method"
    title = "No payment method chosen"


@router.put("/payment-method", response_model=PaymentMethodOut)
async def set_payment_method(body: PaymentMethodIn, user: CurrentUser, session: SessionDep) -> PaymentMethodOut:
    """The provider that pays what the balance does not cover when a rental is charged, if it can take money without
    the user (the sandbox); with a real channel that fee becomes a debt the user pays in the app
    (`/v1/wallet/debts`)."""
    stmt = insert(PaymentMethod).values(user_id=user.user_id, channel=body.channel)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id"], set_={"channel": body.channel, "updated_at": func.now()}
    )
    await session.execute(stmt)
    return PaymentMethodOut(channel=body.channel)


@router.get("/payment-method", response_model=PaymentMethodOut)
async def get_payment_method(user: CurrentUser, session: SessionDep) -> PaymentMethodOut:
    channel = await payment_method(session, user.user_id)
    if channel is None:
        raise NoPaymentMethod()
    return PaymentMethodOut(channel=channel)


@router.delete("/payment-method", status_code=204)
async def delete_payment_method(user: CurrentUser, session: SessionDep) -> Response:
    await session.execute(delete(PaymentMethod).where(PaymentMethod.user_id == user.user_id))
    return Response(status_code=204)
