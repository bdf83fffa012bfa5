import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kit.inputs import UtcDatetime

AssetKindIn = Literal["coupon", "red_packet", "card"]


class TemplateIn(BaseModel):
    """A coupon (amount_off_fen or percent_off [+ max_discount_fen], min_spend_fen), a red packet
    (amount_fen) or a card (card_minutes [+ price_fen to sell it]); valid for valid_days from
    issuance and/or until valid_until."""

    model_config = ConfigDict(extra="forbid")

    kind: AssetKindIn
    name: str = Field(min_length=1, max_length=100)
    amount_off_fen: int | None = Field(default=None, strict=True)
    percent_off: int | None = Field(default=None, strict=True)
    max_discount_fen: int | None = Field(default=None, strict=True)
    min_spend_fen: int = Field(default=0, strict=True)
    amount_fen: int | None = Field(default=None, strict=True)
    card_minutes: int | None = Field(default=None, strict=True)
    price_fen: int | None = Field(default=None, strict=True)
    valid_days: int | None = Field(default=None, strict=True)
    valid_until: UtcDatetime | None = None


class TemplateOut(BaseModel):
    template_id: uuid.UUID
    kind: str
    name: str
    amount_off_fen: int | None
    percent_off: int | None
    max_discount_fen: int | None
    min_spend_fen: int
    amount_fen: int | None
    card_minutes: int | None
    price_fen: int | None
    valid_days: int | None
    valid_until: datetime | None
    active: bool
    created_by: str
    created_at: datetime


class TemplatesOut(BaseModel):
    items: list[TemplateOut]


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)


class AssetOut(BaseModel):
    asset_id: uuid.UUID
    user_id: uuid.UUID
    template_id: uuid.UUID
    kind: str
    name: str
    status: str = Field(description="available | used | expired | revoked")
    issued_at: datetime
    expires_at: datetime
    source: str
    # Coupon rules
    amount_off_fen: int | None = None
    percent_off: int | None = None
    max_discount_fen: int | None = None
    min_spend_fen: int = 0
    used_rental_id: uuid.UUID | None = None
    # Red packet
    amount_fen: int | None = None
    remaining_fen: int | None = None
    # Card
    card_minutes: int | None = None
    minutes_remaining: int | None = None


class IssuedOut(BaseModel):
    items: list[AssetOut]
    issued: int = Field(description="How many were new (the rest were issued before with this key)")


class HistoryOut(BaseModel):
    asset_id: uuid.UUID
    kind: str
    action: str = Field(description="issued | applied | expired | revoked")
    amount_fen: int
    minutes: int
    rental_id: uuid.UUID | None
    charge_id: uuid.UUID | None
    actor: str | None
    created_at: datetime


class MyAssetsOut(BaseModel):
    items: list[AssetOut]
    red_packet_balance_fen: int
    history: list[HistoryOut] = Field(description="Newest first")


class AssetDetailOut(BaseModel):
    asset: AssetOut
    history: list[HistoryOut]


class AssetsOut(BaseModel):
    items: list[AssetOut]


class BuyCardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template_id: uuid.UUID
