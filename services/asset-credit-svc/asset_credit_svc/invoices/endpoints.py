"""Invoice requests: the user asks for an invoice of a receipt, finance exports and answers them."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy import select

from asset_credit_svc.invoices import service
from asset_credit_svc.invoices.schemas import (
    InvoiceRequestIn,
    InvoiceRequestList,
    InvoiceRequestOut,
    IssueIn,
    RejectIn,
)
from asset_credit_svc.models import InvoiceRequest
from asset_credit_svc.receipts.endpoints import receipt_of
from asset_credit_svc.settings import Settings
from kit.app import RuntimeDep
from kit.audit import audited, row_state
from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.csv_export import csv_response
from kit.db import ReadSessionDep, SessionDep
from kit.inputs import UtcDatetime

router = APIRouter(prefix="/v1/wallet/invoice-requests", tags=["invoices"], dependencies=[user_scope("wallet")])
admin_router = APIRouter(prefix="/v1/admin/invoice-requests", tags=["invoices"])

FinanceReader = Annotated[Principal, Depends(require_permission("ledger:read"))]
FinanceWriter = Annotated[Principal, Depends(require_permission("invoices:manage"))]


def _out(row: InvoiceRequest) -> InvoiceRequestOut:
    return InvoiceRequestOut(
        request_id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        subject_id=row.subject_id,
        receipt_no=row.receipt_no,
        status=row.status,
        buyer_type=row.buyer_type,
        title=row.title,
        tax_id=row.tax_id,
        email=row.email,
        amount_fen=row.amount_fen,
        vat_rate_percent=row.vat_rate_percent,
        vat_fen=row.vat_fen,
        channel=row.channel,
        paid_at=row.paid_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        invoice_no=row.invoice_no,
        reject_reason=row.reject_reason,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def request_invoice(
    body: InvoiceRequestIn, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> InvoiceRequestOut:
    """404 `receipt_not_found` for what is not the user's or not paid; 409 `invoice_already_requested` while an
    earlier request of the same receipt is requested or issued."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    receipt = await receipt_of(session, settings, user.user_id, body.kind, body.id)
    row = await service.request_invoice(
        session, receipt, buyer_type=body.buyer_type, title=body.title, tax_id=body.tax_id, email=body.email
    )
    return _out(row)


@router.get("")
async def my_invoice_requests(user: CurrentUser, session: ReadSessionDep) -> InvoiceRequestList:
    stmt = (
        select(InvoiceRequest)
        .where(InvoiceRequest.user_id == user.user_id)
        .order_by(InvoiceRequest.created_at.desc())
        .limit(200)
    )
    return InvoiceRequestList(items=[_out(r) for r in (await session.execute(stmt)).scalars()])


@router.post("/{request_id}/cancel")
async def cancel(request_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> InvoiceRequestOut:
    row = await service.get_for_update(session, request_id, user.user_id)
    service.move(row, service.InvoiceState.CANCELLED)
    return _out(row)


@admin_router.get("", response_model=InvoiceRequestList)
async def list_requests(
    _: FinanceReader,
    session: ReadSessionDep,
    status_: Annotated[service.InvoiceState | None, Query(alias="status")] = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    format: Annotated[Literal["json", "csv"], Query(description="csv: the rows as a CSV file")] = "json",
) -> InvoiceRequestList | Response:
    """The requests (oldest first), e.g. `status=requested&format=csv`: what the invoice provider needs."""
    stmt = select(InvoiceRequest).order_by(InvoiceRequest.created_at).limit(limit)
    if status_ is not None:
        stmt = stmt.where(InvoiceRequest.status == status_.value)
    if since is not None:
        stmt = stmt.where(InvoiceRequest.created_at >= since)
    if until is not None:
        stmt = stmt.where(InvoiceRequest.created_at < until)
    items = [_out(r) for r in (await session.execute(stmt)).scalars()]
    if format == "csv":
        return csv_response(items, list(InvoiceRequestOut.model_fields), "invoice-requests")
    return InvoiceRequestList(items=items)


STATE = row_state(InvoiceRequest)


@admin_router.post(
    "/{request_id}/issue", dependencies=[audited("invoice_request.issue", "invoice_request", "request_id", state=STATE)]
)
async def issue(request_id: uuid.UUID, body: IssueIn, _: FinanceWriter, session: SessionDep) -> InvoiceRequestOut:
    row = await service.get_for_update(session, request_id)
    service.move(row, service.InvoiceState.ISSUED)
    row.invoice_no = body.invoice_no
    return _out(row)


@admin_router.post(
    "/{request_id}/reject",
    dependencies=[audited("invoice_request.reject", "invoice_request", "request_id", state=STATE)],
)
async def reject(request_id: uuid.UUID, body: RejectIn, _: FinanceWriter, session: SessionDep) -> InvoiceRequestOut:
    row = await service.get_for_update(session, request_id)
    service.move(row, service.InvoiceState.REJECTED)
    row.reject_reason = body.reason
    return _out(row)
