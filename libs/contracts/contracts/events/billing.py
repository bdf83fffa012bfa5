"""Events of billing-svc: rentals, the charges and refunds they ask for, debts and disputes."""

from typing import Literal, TypeAlias
from uuid import UUID

from pydantic import AwareDatetime, Field

from contracts.events._base import Fen, _Data
from contracts.events.device import EjectFailureReason
from contracts.regions import DivisionCode
from contracts.topics import Topic


class PriceSnapshot(_Data):
    """The price that applies to a rental, fixed when it started."""

    period_minutes: int
    price_per_period_fen: Fen
    free_minutes: int
    daily_cap_fen: Fen
    purchase_ceiling_fen: Fen | None = Field(
        default=None, description="An unreturned bank costing this much is sold to the user (no more is charged)"
    )


class RentalStarted(_Data):
    type: Literal["billing.rental.started"] = "billing.rental.started"
    rental_id: UUID
    user_id: UUID
    bank_id: str
    cabinet_id: str
    slot: int
    started_at: AwareDatetime
    price: PriceSnapshot
    after_failure: bool = Field(
        default=False, description="A late eject revived a rental the user was told had failed: tell the user"
    )


class RentalFailed(_Data):
    type: Literal["billing.rental.failed"] = "billing.rental.failed"
    rental_id: UUID
    user_id: UUID
    reason: EjectFailureReason
    at: AwareDatetime


class RentalEnded(_Data):
    type: Literal["billing.rental.ended"] = "billing.rental.ended"
    rental_id: UUID
    user_id: UUID
    bank_id: str
    start_cabinet_id: str
    return_cabinet_id: str
    started_at: AwareDatetime
    ended_at: AwareDatetime
    duration_seconds: int
    fee_fen: Fen
    purchased: bool = Field(default=False, description="Not returned by the purchase ceiling: sold to the user")


class ChargeRequested(_Data):
    """Ask asset-credit-svc to collect a fee. `charge_id` is the idempotency key: one charge per rental."""

    type: Literal["billing.charge.requested"] = "billing.charge.requested"
    charge_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    # The rental's timing, so asset-credit-svc can apply a card of free minutes (absent from
    # older producers: then no card applies).
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    duration_seconds: int | None = Field(default=None, ge=0)
    region_code: DivisionCode | None = Field(
        default=None,
        description="The division of the cabinet the bank was borrowed from (finance's revenue by region); absent "
        "when unknown or from older producers",
    )


class DebtWaived(_Data):
    """Support lowered an unpaid rental's fee to zero: the user no longer owes it."""

    type: Literal["billing.debt.waived"] = "billing.debt.waived"
    rental_id: UUID
    user_id: UUID
    waived_fen: Fen
    at: AwareDatetime


class RefundRequested(_Data):
    """Give money back for a rental (a support correction). `refund_id` is the idempotency key."""

    type: Literal["billing.refund.requested"] = "billing.refund.requested"
    refund_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    reason: str = Field(max_length=200)


class DisputeOpened(_Data):
    """A user disputed a rental (billing-svc holds the dispute and alone resolves it); notify-svc opens
    a ticket of kind `dispute` in the staff queue."""

    type: Literal["billing.dispute.opened"] = "billing.dispute.opened"
    dispute_id: UUID
    rental_id: UUID
    user_id: UUID
    reason: str = Field(max_length=2000)
    at: AwareDatetime


class DisputeResolved(_Data):
    """Support settled a dispute in billing-svc: `rejected`, or `corrected` (the rental ended or its fee
    lowered)."""

    type: Literal["billing.dispute.resolved"] = "billing.dispute.resolved"
    dispute_id: UUID
    rental_id: UUID
    user_id: UUID
    outcome: Literal["rejected", "corrected"]
    note: str = Field(default="", max_length=2000)
    by: str = Field(max_length=100)
    at: AwareDatetime


# Every event of this domain, joined into contracts.events.EventData.
Events: TypeAlias = (
    RentalStarted
    | RentalFailed
    | RentalEnded
    | ChargeRequested
    | DebtWaived
    | RefundRequested
    | DisputeOpened
    | DisputeResolved
)

TOPICS: dict[str, Topic] = {
    "billing.rental.started": Topic.RENTALS,
    "billing.rental.failed": Topic.RENTALS,
    "billing.rental.ended": Topic.RENTALS,
    "billing.charge.requested": Topic.CHARGES,
    "billing.debt.waived": Topic.CHARGES,
    "billing.refund.requested": Topic.CHARGES,
    "billing.dispute.opened": Topic.DISPUTES,
    "billing.dispute.resolved": Topic.DISPUTES,
}
