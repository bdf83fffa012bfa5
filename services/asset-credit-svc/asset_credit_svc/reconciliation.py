"""Reconciliation against the providers' records (finance): every top-up and provider-paid charge
of a period is compared with what the provider says about its order; differences are reported,
never silently fixed (GET /v1/admin/reconciliation)."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.charges import service as charges
from asset_credit_svc.models import Charge, ChargeStatus, TopUp, TopUpStatus
from asset_credit_svc.payments.providers import OrderState, PaymentProvider, PaymentProviderError
from asset_credit_svc.payments.service import UnsupportedChannel
from kit.app import RuntimeDep
from kit.auth import Principal, require_permission
from kit.db import SessionDep
from kit.inputs import UtcDatetime

router = APIRouter(tags=["reconciliation"])

Finance = Annotated[Principal, Depends(require_permission("ledger:read"))]


class Mismatch(BaseModel):
    kind: Literal["top_up", "charge"]
    id: str
    out_trade_no: str
    ours: str
    ours_amount_fen: int
    provider: str
    provider_amount_fen: int | None
    problem: str


class ReconciliationReport(BaseModel):
    channel: str
    since: datetime
    until: datetime
    checked: int
    mismatches: list[Mismatch]


def _problem(ours_paid: bool | None, ours_amount: int, state: OrderState, amount: int | None) -> str | None:
    """None when both sides agree; `ours_paid` None means we are still waiting."""
    provider_paid = state == OrderState.SUCCESS
    if provider_paid and amount is not None and amount != ours_amount:
        return "amount_differs"
    if ours_paid is None:
        return "provider_paid_we_wait" if provider_paid else None
    if ours_paid and not provider_paid:
        return "we_credited_provider_did_not_pay"
    if not ours_paid and provider_paid:
        return "provider_paid_we_did_not_credit"
    return None


async def reconcile(
    session: AsyncSession, provider: PaymentProvider, since: datetime, until: datetime, limit: int
) -> ReconciliationReport:
    mismatches: list[Mismatch] = []
    checked = 0
    top_ups = (
        await session.execute(
            select(TopUp)
            .where(TopUp.channel == provider.channel, TopUp.created_at >= since, TopUp.created_at < until)
            .order_by(TopUp.created_at)
            .limit(limit)
        )
    ).scalars()
    for top_up in top_ups:
        answer = await _query(provider, str(top_up.id), top_up.created_at)
        checked += 1
        ours_paid = None if top_up.status == TopUpStatus.PENDING else top_up.status == TopUpStatus.SUCCEEDED
        problem = (
            "provider_unreachable" if answer is None else _problem(ours_paid, top_up.amount_fen, answer[0], answer[1])
        )
        if problem:
            mismatches.append(
                Mismatch(
                    kind="top_up",
                    id=str(top_up.id),
                    out_trade_no=str(top_up.id),
                    ours=top_up.status,
                    ours_amount_fen=top_up.amount_fen,
                    provider=answer[0].value if answer else "unknown",
                    provider_amount_fen=answer[1] if answer else None,
                    problem=problem,
                )
            )
    provider_charges = (
        await session.execute(
            select(Charge)
            .where(
                Charge.provider_channel == provider.channel,
                Charge.provider_requested_at >= since,
                Charge.provider_requested_at < until,
            )
            .order_by(Charge.provider_requested_at)
            .limit(limit)
        )
    ).scalars()
    for charge in provider_charges:
        assert charge.provider_amount_fen is not None
        out_trade_no = charges.order_no(charge.charge_id)
        answer = await _query(provider, out_trade_no, charge.provider_requested_at)
        checked += 1
        credited = charge.provider_transaction_id is not None
        ours_paid = None if charge.status == ChargeStatus.AWAITING_PROVIDER.value else credited
        problem = (
            "provider_unreachable"
            if answer is None
            else _problem(ours_paid, charge.provider_amount_fen, answer[0], answer[1])
        )
        if problem:
            mismatches.append(
                Mismatch(
                    kind="charge",
                    id=str(charge.charge_id),
                    out_trade_no=out_trade_no,
                    ours=charge.status,
                    ours_amount_fen=charge.provider_amount_fen,
                    provider=answer[0].value if answer else "unknown",
                    provider_amount_fen=answer[1] if answer else None,
                    problem=problem,
                )
            )
    return ReconciliationReport(
        channel=provider.channel, since=since, until=until, checked=checked, mismatches=mismatches
    )


async def _query(
    provider: PaymentProvider, out_trade_no: str, placed_at: datetime | None
) -> tuple[OrderState, int | None] | None:
    try:
        answer = await provider.query_order(out_trade_no, placed_at)
    except PaymentProviderError:
        return None
    return answer.state, answer.amount_fen


@router.get("/v1/admin/reconciliation/{channel}")
async def reconciliation_report(
    channel: str,
    since: UtcDatetime,
    until: UtcDatetime,
    _: Finance,
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> ReconciliationReport:
    provider = charges.providers_of(runtime).get(channel)
    if provider is None:
        raise UnsupportedChannel(f"Unsupported payment channel {channel!r}")
    return await reconcile(session, provider, since, until, limit)
