"""Finance: a channel's daily statement reconciled (`POST` fetches it from the channel and reconciles; `GET`
answers the last result)."""

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from asset_credit_svc.models import StatementMismatch, StatementRun
from asset_credit_svc.payments.endpoints import ProvidersDep
from asset_credit_svc.payments.providers import PaymentProviderError, StatementNotReady
from asset_credit_svc.payments.service import ProviderUnavailable, UnsupportedChannel
from asset_credit_svc.statements import repository, service
from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import SessionDep
from kit.errors import Conflict, NotFound

router = APIRouter(tags=["reconciliation"])

Finance = Annotated[Principal, Depends(require_permission("ledger:read"))]


class StatementNotReadyError(Conflict):
    code = "statement_not_ready"
    title = "The channel has no statement for that day yet"


class StatementNotReconciled(NotFound):
    code = "statement_not_reconciled"
    title = "That day's statement has not been reconciled yet"


class MismatchOut(BaseModel):
    kind: Literal["payment", "refund"]
    number: str
    problem: Literal["missing_on_our_side", "missing_on_their_side", "amount_differs"]
    our_amount_fen: int | None
    our_status: str | None
    their_amount_fen: int | None
    trade_no: str | None


class StatementReport(BaseModel):
    channel: str
    bill_date: date
    reconciled_at: datetime
    lines: int
    statement_payments_fen: int
    statement_refunds_fen: int
    statement_fees_fen: int
    our_payments_fen: int
    our_refunds_fen: int
    mismatches: list[MismatchOut]


def _report(run: StatementRun, mismatches: list[StatementMismatch]) -> StatementReport:
    return StatementReport(
        channel=run.channel,
        bill_date=run.bill_date,
        reconciled_at=run.reconciled_at,
        lines=run.lines,
        statement_payments_fen=run.statement_payments_fen,
        statement_refunds_fen=run.statement_refunds_fen,
        statement_fees_fen=run.statement_fees_fen,
        our_payments_fen=run.our_payments_fen,
        our_refunds_fen=run.our_refunds_fen,
        mismatches=[
            MismatchOut.model_validate(m, from_attributes=True)
            for m in sorted(mismatches, key=lambda m: (m.kind, m.number))
        ],
    )


@router.post(
    "/v1/admin/reconciliation/{channel}/statements/{bill_date}",
    dependencies=[audited("statement.reconcile", "statement", "bill_date")],
)
async def reconcile_statement(
    channel: str, bill_date: date, _: Finance, session: SessionDep, providers: ProvidersDep, audit: CurrentAudit
) -> StatementReport:
    source = service.statement_sources(providers).get(channel)
    if source is None:
        raise UnsupportedChannel(f"Channel {channel!r} has no statements")
    try:
        lines = await source.statement(bill_date)  # before the transaction opens
    except StatementNotReady:
        raise StatementNotReadyError() from None
    except PaymentProviderError:
        raise ProviderUnavailable() from None
    earlier = await repository.result(session, channel, bill_date)
    before = _run_totals(earlier[0]) if earlier else {}
    run, mismatches = await service.reconcile(session, channel, bill_date, lines)
    audit.changed(before, _run_totals(run), channel=channel)
    return _report(run, mismatches)


def _run_totals(run: StatementRun) -> dict[str, int]:
    """A reconciliation's figures, for its audit entry (a run again replaces the day's earlier one)."""
    return {
        "lines": run.lines,
        "statement_payments_fen": run.statement_payments_fen,
        "statement_refunds_fen": run.statement_refunds_fen,
        "statement_fees_fen": run.statement_fees_fen,
        "our_payments_fen": run.our_payments_fen,
        "our_refunds_fen": run.our_refunds_fen,
        "mismatches": run.mismatches,
    }


@router.get("/v1/admin/reconciliation/{channel}/statements/{bill_date}")
async def statement_report(channel: str, bill_date: date, _: Finance, session: SessionDep) -> StatementReport:
    found = await repository.result(session, channel, bill_date)
    if found is None:
        raise StatementNotReconciled()
    return _report(*found)
