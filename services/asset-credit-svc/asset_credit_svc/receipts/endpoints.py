"""A user's receipt for a paid rental (its settled charge) or a succeeded top-up: amounts in fen, how it
was paid, the order numbers, and for a rental the VAT included in the fee (a top-up is a prepayment: VAT
is due when the money is spent, so its receipt has no tax line)."""

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.charges.service import order_no
from asset_credit_svc.debts import service as debts
from asset_credit_svc.models import Charge, ChargeStatus, DebtPayment, TopUp, TopUpStatus
from asset_credit_svc.payments.order_numbers import to_wire
from asset_credit_svc.settings import Settings
from kit.app import RuntimeDep
from kit.auth import CurrentUser, user_scope
from kit.db import ReadSessionDep
from kit.errors import NotFound

router = APIRouter(prefix="/v1/wallet", tags=["receipts"], dependencies=[user_scope("wallet")])


class ReceiptNotFound(NotFound):
    code = "receipt_not_found"
    title = "No receipt: nothing of yours was paid under this number"


class TaxLine(BaseModel):
    name: str
    rate_percent: int
    included_fen: int  # the VAT inside `total_fen` (prices are tax-inclusive)


class Receipt(BaseModel):
    kind: Literal["rental", "top_up"]
    receipt_no: str
    user_id: uuid.UUID
    issued_for: str  # the rental or top-up id
    paid_at: datetime | None
    currency: Literal["CNY"] = "CNY"
    total_fen: int
    discounts_fen: dict[str, int]
    paid_from_balance_fen: int
    paid_by_channel_fen: int
    channel: str | None
    # The numbers the channel knows the payment by: ours as sent (`out_trade_no`) and theirs.
    out_trade_no: str | None
    channel_trade_no: str | None
    tax: TaxLine | None


def vat_included(total_fen: int, rate_percent: int) -> int:
    """The VAT inside a tax-inclusive price, to the fen, half up."""
    return (total_fen * rate_percent * 2 + (100 + rate_percent)) // (2 * (100 + rate_percent))


@router.get("/rentals/{rental_id}/receipt")
async def rental_receipt(
    rental_id: uuid.UUID, user: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep
) -> Receipt:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return await receipt_of(session, settings, user.user_id, "rental", rental_id)


@router.get("/top-ups/{top_up_id}/receipt")
async def top_up_receipt(
    top_up_id: uuid.UUID, user: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep
) -> Receipt:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return await receipt_of(session, settings, user.user_id, "top_up", top_up_id)


async def receipt_of(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID, kind: Literal["rental", "top_up"], of: uuid.UUID
) -> Receipt:
    """The user's receipt for a paid rental (`of` = the rental) or a succeeded top-up; ReceiptNotFound otherwise."""
    if kind == "top_up":
        return await _top_up_receipt(session, user_id, of)
    rental_id = of
    charge = (
        await session.execute(
            select(Charge).where(
                Charge.rental_id == rental_id,
                Charge.user_id == user_id,
                Charge.status == ChargeStatus.SETTLED.value,
            )
        )
    ).scalar_one_or_none()
    if charge is None:
        raise ReceiptNotFound()
    discounts = {"card": charge.card_fen, "coupon": charge.coupon_fen, "red_packet": charge.red_packet_fen}
    by_channel = (charge.provider_amount_fen or 0) if charge.provider_transaction_id else 0
    total = charge.amount_fen
    channel, out_trade_no, channel_trade_no = (
        charge.provider_channel,
        order_no(charge.charge_id),
        charge.provider_trade_no,
    )
    if not by_channel:  # an unpaid fee the user paid later through a channel (debts/): that payment settled it
        debt = (
            await session.execute(select(DebtPayment).where(DebtPayment.settled_charge_id == charge.charge_id))
        ).scalar_one_or_none()
        if debt is not None:
            by_channel = min(debt.amount_fen, total - sum(discounts.values()))
            channel, out_trade_no, channel_trade_no = debt.channel, debts.order_no(debt.id), debt.provider_trade_no
    return Receipt(
        kind="rental",
        receipt_no=f"R{to_wire(str(charge.charge_id))}",
        user_id=charge.user_id,
        issued_for=str(rental_id),
        paid_at=charge.completed_at,
        total_fen=total,
        discounts_fen={k: v for k, v in discounts.items() if v},
        paid_from_balance_fen=total - sum(discounts.values()) - by_channel,
        paid_by_channel_fen=by_channel,
        channel=channel if by_channel else None,
        out_trade_no=to_wire(out_trade_no) if by_channel else None,
        channel_trade_no=channel_trade_no if by_channel else None,
        tax=TaxLine(
            name=settings.receipt_vat_name,
            rate_percent=settings.receipt_vat_rate_percent,
            included_fen=vat_included(total - sum(discounts.values()), settings.receipt_vat_rate_percent),
        )
        if settings.receipt_vat_rate_percent
        else None,
    )


async def _top_up_receipt(session: AsyncSession, user_id: uuid.UUID, top_up_id: uuid.UUID) -> Receipt:
    top_up = await session.get(TopUp, top_up_id)
    if top_up is None or top_up.user_id != user_id or top_up.status != TopUpStatus.SUCCEEDED:
        raise ReceiptNotFound()
    return Receipt(
        kind="top_up",
        receipt_no=f"T{to_wire(str(top_up.id))}",
        user_id=top_up.user_id,
        issued_for=str(top_up.id),
        paid_at=top_up.paid_at,
        total_fen=top_up.amount_fen,
        discounts_fen={},
        paid_from_balance_fen=0,
        paid_by_channel_fen=top_up.amount_fen,
        channel=top_up.channel,
        out_trade_no=to_wire(str(top_up.id)),
        channel_trade_no=top_up.provider_trade_no,
        tax=None,
    )
