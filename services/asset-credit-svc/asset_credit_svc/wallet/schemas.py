import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from asset_credit_svc.payments.schemas import Channel


class WalletOut(BaseModel):
    user_id: uuid.UUID
    balance_fen: int
    currency: Literal["CNY"] = "CNY"
    # Red packets (spendable on rental fees only, not withdrawable); see GET /v1/assets.
    red_packet_fen: int = 0
    # What billing checks before a rental (credit, deposit); `borrow_refusal` is a problem code.
    deposit_held_fen: int = 0
    credit_score: int | None = None
    credit_level: str | None = None
    borrow_refusal: str | None = None
    borrow_refusal_detail: str | None = None


class EntryOut(BaseModel):
    entry_id: int
    kind: str
    amount_fen: int
    balance_after_fen: int
    reference: str
    created_at: datetime


class EntriesOut(BaseModel):
    items: list[EntryOut]
    # Pass as `before` to get the next (older) page; null on the last page.
    next_before: int | None


class PaymentMethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel


class PaymentMethodOut(BaseModel):
    channel: str


class MovementOut(BaseModel):
    movement_id: uuid.UUID
    # top_up: money in through a provider; withdrawal: one part of a withdrawal, back through the
    # provider order it came in by; refund: part of a rental's fee back to the balance; debt_payment: an unpaid
    # rental fee paid through a provider (in, then spent on the rental: `reference_id` is the rental).
    kind: Literal["top_up", "withdrawal", "refund", "debt_payment"]
    # Signed: positive into the wallet, negative out of it.
    amount_fen: int
    # alipay, wechat, ... or `balance` for a rental refund.
    channel: str
    status: str
    created_at: datetime
    completed_at: datetime | None
    failure_reason: str | None
    # The top-up, the withdrawal this part belongs to, or the refunded rental.
    reference_id: uuid.UUID


class MovementsOut(BaseModel):
    items: list[MovementOut]
    # Pass as `before` to get the next (older) page; null on the last page.
    next_before: str | None


class AdminWalletOut(BaseModel):
    user_id: uuid.UUID
    balance_fen: int
    red_packet_fen: int
    deposit_held_fen: int
    movements: MovementsOut
