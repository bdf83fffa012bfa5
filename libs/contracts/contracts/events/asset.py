"""Events of asset-credit-svc: wallets, payments, refunds, coupons, deposits and credit."""

from enum import StrEnum
from typing import Literal, TypeAlias
from uuid import UUID

from pydantic import AwareDatetime, Field

from contracts.events._base import Fen, _Data
from contracts.topics import Topic


class WalletToppedUp(_Data):
    type: Literal["asset.wallet.topped_up"] = "asset.wallet.topped_up"
    user_id: UUID
    top_up_id: UUID
    amount_fen: Fen
    balance_fen: Fen
    provider: str


class ChargeSettled(_Data):
    type: Literal["asset.charge.settled"] = "asset.charge.settled"
    charge_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    balance_fen: Fen
    settled_at: AwareDatetime
    # How the fee (`amount_fen`) was covered, in the order applied: a card's free minutes, a
    # coupon, red packets, then the balance (topped up by the user's provider when short).
    card_fen: Fen = 0
    coupon_fen: Fen = 0
    red_packet_fen: Fen = 0
    paid_fen: Fen | None = Field(default=None, description="Paid from the balance/provider; null means amount_fen")


class ChargeFailed(_Data):
    type: Literal["asset.charge.failed"] = "asset.charge.failed"
    charge_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    reason: str


class RefundSettled(_Data):
    type: Literal["asset.refund.settled"] = "asset.refund.settled"
    refund_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    balance_fen: Fen
    settled_at: AwareDatetime


class CouponStatus(StrEnum):
    AVAILABLE = "available"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


class CouponChanged(_Data):
    """A coupon was issued to a user (`available`) or left that state. An available coupon past
    `expires_at` is unused no longer, with or without an `expired` event."""

    type: Literal["asset.coupon.changed"] = "asset.coupon.changed"
    user_id: UUID
    asset_id: UUID
    status: CouponStatus
    expires_at: AwareDatetime
    at: AwareDatetime


class DepositPaid(_Data):
    """A user's deposit was paid (the provider's verified notification credited it)."""

    type: Literal["asset.deposit.paid"] = "asset.deposit.paid"
    deposit_id: UUID
    user_id: UUID
    amount_fen: Fen
    channel: str = Field(max_length=20)
    at: AwareDatetime


class DepositRefundRequested(_Data):
    """A deposit refund was booked (asked by the user, or on deregistration); the provider pays it."""

    type: Literal["asset.deposit.refund_requested"] = "asset.deposit.refund_requested"
    refund_id: UUID
    user_id: UUID
    amount_fen: Fen
    source: str = Field(max_length=20, description="`user` or `deregistered`")
    requested_at: AwareDatetime


class DepositRefunded(_Data):
    """The provider confirmed a deposit refund: the money is back with the user."""

    type: Literal["asset.deposit.refunded"] = "asset.deposit.refunded"
    refund_id: UUID
    user_id: UUID
    amount_fen: Fen
    requested_at: AwareDatetime
    paid_at: AwareDatetime


class CreditChanged(_Data):
    """A user's credit score moved (a rule or an administrator): the score and level after it, and whether
    borrowing needs no deposit at this score. Consumers keep the latest by `at` (analytics' user
    attributes, notify-svc's campaign audience)."""

    type: Literal["asset.credit.changed"] = "asset.credit.changed"
    user_id: UUID
    score: int = Field(ge=0, le=1000)
    delta: int
    level: str = Field(max_length=32)
    deposit_free: bool
    reason: str = Field(max_length=40)
    at: AwareDatetime


class VasFeeSettled(_Data):
    """A priced value-added service was paid from the user's balance: once per acceptance (`consent_id`, from
    notify.vas_consent.recorded), as a ledger entry of kind `vas_fee` (docs/service.md)."""

    type: Literal["asset.vas_fee.settled"] = "asset.vas_fee.settled"
    consent_id: int = Field(ge=1)
    user_id: UUID
    service_code: str = Field(max_length=40)
    amount_fen: Fen
    balance_fen: Fen
    settled_at: AwareDatetime


class VasFeeFailed(_Data):
    """A priced value-added service could not be paid (`insufficient_balance`): nothing was debited, and
    notify-svc withdraws the acceptance so the service is not delivered unpaid."""

    type: Literal["asset.vas_fee.failed"] = "asset.vas_fee.failed"
    consent_id: int = Field(ge=1)
    user_id: UUID
    service_code: str = Field(max_length=40)
    amount_fen: Fen
    reason: str = Field(max_length=40)
    at: AwareDatetime


class VasFeeRefunded(_Data):
    """Finance refunded a settled value-added service fee (`consent_id`) to the user's balance, once, with a
    reason: a ledger entry of kind `vas_refund` (platform revenue back to the balance)."""

    type: Literal["asset.vas_fee.refunded"] = "asset.vas_fee.refunded"
    consent_id: int = Field(ge=1)
    user_id: UUID
    service_code: str = Field(max_length=40)
    amount_fen: Fen
    balance_fen: Fen
    reason: str = Field(max_length=200)
    refunded_at: AwareDatetime


# Every event of this domain, joined into contracts.events.EventData.
Events: TypeAlias = (
    WalletToppedUp
    | ChargeSettled
    | ChargeFailed
    | RefundSettled
    | CouponChanged
    | DepositPaid
    | DepositRefundRequested
    | DepositRefunded
    | CreditChanged
    | VasFeeSettled
    | VasFeeFailed
    | VasFeeRefunded
)

TOPICS: dict[str, Topic] = {
    "asset.wallet.topped_up": Topic.WALLETS,
    "asset.charge.settled": Topic.PAYMENTS,
    "asset.charge.failed": Topic.PAYMENTS,
    "asset.refund.settled": Topic.PAYMENTS,
    "asset.coupon.changed": Topic.COUPONS,
    "asset.deposit.paid": Topic.DEPOSITS,
    "asset.deposit.refund_requested": Topic.DEPOSITS,
    "asset.deposit.refunded": Topic.DEPOSITS,
    "asset.credit.changed": Topic.CREDIT,
    "asset.vas_fee.settled": Topic.PAYMENTS,  # key: user_id
    "asset.vas_fee.failed": Topic.PAYMENTS,
    "asset.vas_fee.refunded": Topic.PAYMENTS,
}
