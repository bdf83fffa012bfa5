import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from asset_credit_svc.payments.schemas import Channel


class DebtOut(BaseModel):
    rental_id: uuid.UUID
    charge_id: uuid.UUID
    amount_fen: int
    reason: str | None
    since: datetime


class DebtsOut(BaseModel):
    items: list[DebtOut]
    total_fen: int


class DebtPaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel


class DebtPaymentOut(BaseModel):
    payment_id: uuid.UUID
    rental_id: uuid.UUID
    channel: str
    amount_fen: int
    status: str
    failure_reason: str | None
    # Settled the rental (`settled_charge_id`), or, when it was no longer owed, left the money in the wallet.
    settled_charge_id: uuid.UUID | None
    created_at: datetime
    completed_at: datetime | None


class DebtPaymentsOut(BaseModel):
    items: list[DebtPaymentOut]


class DebtPayParamsOut(BaseModel):
    """What the app hands to the channel's SDK (or, for a bank card, posts as a form) to pay."""

    payment_id: uuid.UUID
    channel: str
    amount_fen: int
    pay_params: dict[str, str]
