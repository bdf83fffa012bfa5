import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class InvoiceRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # What is invoiced: a paid rental (its id) or a succeeded top-up (its id), as their receipts name them.
    kind: Literal["rental", "top_up"]
    id: uuid.UUID
    buyer_type: Literal["personal", "company"]
    title: str = Field(min_length=1, max_length=100)  # the buyer's name as the invoice shows it
    # A company's unified social credit code (18) or older taxpayer id (15 to 20), letters and digits.
    tax_id: str | None = Field(default=None, pattern=r"^[0-9A-Z]{15,20}$")
    # Where the provider sends the invoice (a plain shape check: the provider's delivery is the real test).
    email: str = Field(max_length=254, pattern=r"^[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class InvoiceRequestOut(BaseModel):
    request_id: uuid.UUID
    user_id: uuid.UUID
    kind: str
    subject_id: uuid.UUID
    receipt_no: str
    status: str
    buyer_type: str
    title: str
    tax_id: str | None
    email: str
    amount_fen: int
    vat_rate_percent: int | None
    vat_fen: int | None
    channel: str | None
    paid_at: datetime | None
    created_at: datetime
    updated_at: datetime
    invoice_no: str | None
    reject_reason: str | None


class InvoiceRequestList(BaseModel):
    items: list[InvoiceRequestOut]


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_no: str = Field(min_length=1, max_length=40)  # the number the invoice provider gave it


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200)
