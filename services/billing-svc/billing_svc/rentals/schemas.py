from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from contracts.events import PriceSnapshot


class BorrowRequest(BaseModel):
    code: str = Field(min_length=1, max_length=128, description="What the user scanned: a bank's or a cabinet's id")


class RentalOut(BaseModel):
    rental_id: UUID
    state: str
    code: str
    bank_id: str | None
    bank_model: str | None = Field(default=None, description="The bank's model, as the device registry knows it")
    cabinet_id: str | None = Field(description="Where the bank was taken from")
    slot: int | None
    return_cabinet_id: str | None
    requested_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: int | None
    fee_fen: int | None
    failure_reason: str | None
    price: PriceSnapshot
    purchased: bool = Field(default=False, description="The bank was not returned by the purchase ceiling")
    # How the fee (`fee_fen`, gross) was covered once collected: discounts, then what was paid.
    card_fen: int = Field(default=0, description="Covered by a card of free minutes")
    coupon_fen: int = Field(default=0, description="Taken off by a coupon")
    red_packet_fen: int = Field(default=0, description="Paid with red packets")
    discount_fen: int = Field(default=0, description="card_fen + coupon_fen + red_packet_fen")
    paid_fen: int | None = Field(default=None, description="Paid from the balance/provider (net of refunds)")


class BankPosition(BaseModel):
    lat: float
    lon: float
    reported_at: datetime = Field(description="When the bank's own module reported it")


class CurrentRentalOut(RentalOut):
    elapsed_seconds: int = Field(description="Seconds since the bank was ejected")
    running_fee_fen: int = Field(description="What the rental would cost if it ended now")
    position_consent: bool | None = Field(
        default=None,
        description="Whether the user lets the app show where the rented bank is (device-svc "
        "PUT /v1/banks/rented-by-me/position-consent); null when device-svc did not answer",
    )
    bank_position: BankPosition | None = Field(
        default=None,
        description="The rented bank's last known position and its time (6.1.9): only with the user's "
        "consent, only for a bank with its own module, null when unknown",
    )


class RentalPage(BaseModel):
    items: list[RentalOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end")
