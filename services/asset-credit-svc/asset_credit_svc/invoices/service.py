"""Invoice requests (电子发票 requests) for paid rentals and succeeded top-ups: what an invoice provider needs,
stored and exportable; no provider is integrated. A user asks for an invoice of one of their receipts, with the
buyer's title (a person's name or a company's, with its tax id) and where to send it; finance exports the open
requests, has the invoices made, and records each one's number (issued) or why not (rejected). The state machine
is the one table below; every change goes through `move`."""

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.models import InvoiceRequest
from asset_credit_svc.receipts.endpoints import Receipt
from kit.errors import BusinessError, Conflict, NotFound


class InvoiceState(StrEnum):
    REQUESTED = "requested"  # waiting for finance
    ISSUED = "issued"  # finance recorded the invoice's number
    REJECTED = "rejected"  # finance said why not (a wrong tax id, ...): the user may ask again
    CANCELLED = "cancelled"  # the user withdrew it before it was issued: may ask again


TRANSITIONS: dict[InvoiceState, frozenset[InvoiceState]] = {
    InvoiceState.REQUESTED: frozenset({InvoiceState.ISSUED, InvoiceState.REJECTED, InvoiceState.CANCELLED}),
    InvoiceState.ISSUED: frozenset(),  # a red-letter reversal is the provider's business, not modelled here
    InvoiceState.REJECTED: frozenset(),
    InvoiceState.CANCELLED: frozenset(),
}
# A receipt has at most one request in these states (a partial unique index backs it).
OPEN_STATES = (InvoiceState.REQUESTED, InvoiceState.ISSUED)


class IllegalInvoiceTransition(Conflict):
    code = "illegal_invoice_transition"
    title = "The invoice request cannot move to that state"


class InvoiceAlreadyRequested(Conflict):
    code = "invoice_already_requested"
    title = "An invoice of this receipt is already requested or issued"


class InvoiceRequestNotFound(NotFound):
    code = "invoice_request_not_found"
    title = "Invoice request not found"


class TaxIdRequired(BusinessError):
    status = 422
    code = "tax_id_required"
    title = "A company's invoice needs its taxpayer id"


def move(request: InvoiceRequest, to: InvoiceState) -> None:
    if to not in TRANSITIONS[InvoiceState(request.status)]:
        raise IllegalInvoiceTransition(f"{request.status} -> {to.value}")
    request.status = to.value
    request.updated_at = datetime.now(UTC)


async def request_invoice(
    session: AsyncSession,
    receipt: Receipt,
    *,
    buyer_type: str,
    title: str,
    tax_id: str | None,
    email: str,
) -> InvoiceRequest:
    """Store the request with the receipt's amounts as they are now (what the invoice will say)."""
    if buyer_type == "company" and not tax_id:
        raise TaxIdRequired()
    invoiced = receipt.total_fen - sum(receipt.discounts_fen.values())
    now = datetime.now(UTC)
    inserted = (
        await session.execute(
            insert(InvoiceRequest)
            .values(
                id=uuid.uuid4(),
                user_id=receipt.user_id,
                kind=receipt.kind,
                subject_id=uuid.UUID(receipt.issued_for),
                receipt_no=receipt.receipt_no,
                status=InvoiceState.REQUESTED.value,
                buyer_type=buyer_type,
                title=title,
                tax_id=tax_id,
                email=email,
                amount_fen=invoiced,
                vat_rate_percent=receipt.tax.rate_percent if receipt.tax else None,
                vat_fen=receipt.tax.included_fen if receipt.tax else None,
                channel=receipt.channel,
                paid_at=receipt.paid_at,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
            .returning(InvoiceRequest.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        raise InvoiceAlreadyRequested()
    row = await session.get(InvoiceRequest, inserted)
    assert row is not None
    return row


async def get_for_update(
    session: AsyncSession, request_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> InvoiceRequest:
    row = (
        await session.execute(select(InvoiceRequest).where(InvoiceRequest.id == request_id).with_for_update())
    ).scalar_one_or_none()
    if row is None or (user_id is not None and row.user_id != user_id):
        raise InvoiceRequestNotFound()
    return row
