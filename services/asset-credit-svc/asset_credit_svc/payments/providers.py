"""What this service needs from a payment provider, whatever the channel.

A top-up is an order at the provider (`out_trade_no` = our top-up id). The provider tells us the
outcome by a signed, asynchronous notification to `POST /v1/payments/{channel}/notify`, which it
repeats until we acknowledge; `query_order` asks it directly (reconciliation).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from kit.inputs import UtcDatetime

# Where the app keeps the providers by channel (runtime.extras).
PROVIDERS_KEY = "payment_providers"


class PaymentProviderError(Exception):
    """The provider refused or could not be reached."""


class InvalidSignature(Exception):
    """A notification whose signature does not verify: it did not come from the provider."""


class MalformedNotification(Exception):
    """A notification that is signed but not a notification we understand."""


class NotificationToIgnore(Exception):
    """A genuine notification that moves nothing here (UnionPay's notice of a refund's outcome, which we
    confirm by query): acknowledged so the channel stops repeating it, never applied."""


@dataclass(frozen=True)
class PaymentOrder:
    out_trade_no: str
    amount_fen: int
    subject: str
    # Who pays, where the channel needs it (WeChat Pay JSAPI: the payer's openid).
    payer: str | None = None
    # When our row was made: UnionPay knows an order by its number and this time (`txnTime`), so every call
    # about the same order must carry the same value (the others ignore it).
    placed_at: datetime | None = None


@dataclass(frozen=True)
class CreatedOrder:
    out_trade_no: str
    # What the app hands to the provider's SDK to pay (order string, prepay id, ...).
    pay_params: Mapping[str, str] = field(default_factory=dict)


class OrderState(StrEnum):
    NOT_FOUND = "NOT_FOUND"
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass(frozen=True)
class OrderQuery:
    out_trade_no: str
    state: OrderState
    amount_fen: int | None = None
    trade_no: str | None = None
    paid_at: datetime | None = None


class RefundState(StrEnum):
    NOT_FOUND = "NOT_FOUND"
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass(frozen=True)
class RefundQuery:
    refund_no: str
    state: RefundState
    amount_fen: int | None = None


@dataclass(frozen=True)
class NotifyAnswer:
    """What the provider expects back from a notification it may stop repeating (Alipay: the text
    `success`; WeChat Pay: a 2xx with a JSON code)."""

    body: bytes
    media_type: str


JSON_ACK = NotifyAnswer(b'{"code":"SUCCESS","message":"OK"}', "application/json")


class PaymentNotification(BaseModel):
    """The verified content of a provider's notification."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out_trade_no: str = Field(min_length=1, max_length=64)
    trade_no: str = Field(min_length=1, max_length=100)
    amount_fen: StrictInt
    status: Literal["SUCCESS", "FAILED"]
    paid_at: UtcDatetime | None = None
    nonce: str = Field(min_length=1, max_length=64)


class StatementNotReady(PaymentProviderError):
    """The channel has not made that day's statement yet (or never will: a day without trades)."""


@dataclass(frozen=True)
class StatementLine:
    """One line of a channel's daily statement, numbers read back into ours (`order_numbers.from_wire`).
    A payment is numbered by its order (`out_trade_no`), a refund by our refund number."""

    kind: Literal["payment", "refund"]
    number: str
    out_trade_no: str
    trade_no: str
    amount_fen: int
    fee_fen: int
    at: datetime


@runtime_checkable
class StatementSource(Protocol):
    """A channel that hands out a daily statement of what it moved (Alipay's and WeChat Pay's bills;
    the sandbox has none)."""

    channel: str

    async def statement(self, bill_date: date) -> list[StatementLine]:
        """The day's payments and refunds (the channel's day, Beijing time); raises StatementNotReady,
        or PaymentProviderError when the channel refused or could not be reached or the file does not check."""
        ...


@runtime_checkable
class OrderCloser(Protocol):
    """A channel that can close an unpaid order, so nobody can pay it any more (Alipay's trade.close, WeChat
    Pay's order close; UnionPay has none: its orders lapse at their pay timeout). A top-up left unpaid past its
    time is closed there before it is failed here; a payment that slips in anyway is still credited."""

    channel: str

    async def close_order(self, out_trade_no: str, placed_at: datetime | None = None) -> None:
        """Close the order if it is unpaid (an order the channel does not know counts as closed); raises
        PaymentProviderError when refused or unreachable, or when the order was paid meanwhile."""
        ...


@runtime_checkable
class PaymentProvider(Protocol):
    channel: str
    # Whether the channel takes money without the user at hand (a withhold agreement; the sandbox pays by
    # itself). Only such a channel pays a charge's shortfall by itself (`chg_` orders); with any other the fee the
    # wallet does not cover becomes a debt the user pays in their app (`debts/`).
    charges_without_user: bool

    async def create_order(self, order: PaymentOrder) -> CreatedOrder:
        """Open an order at the provider; idempotent on `out_trade_no`."""
        ...

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentNotification:
        """The notification if it is authentic; raises InvalidSignature or MalformedNotification."""
        ...

    async def query_order(self, out_trade_no: str, placed_at: datetime | None = None) -> OrderQuery:
        """`placed_at`: the order's `PaymentOrder.placed_at` (the channels that know orders by number alone
        ignore it)."""
        ...

    async def refund(
        self,
        out_trade_no: str,
        refund_no: str,
        amount_fen: int,
        placed_at: datetime | None = None,
        refund_placed_at: datetime | None = None,
    ) -> None:
        """Give `amount_fen` of a paid order back to the payer; idempotent on `refund_no` (and, where the
        channel needs it, `refund_placed_at`: when our refund row was made). Raises PaymentProviderError when
        refused or unreachable (the caller retries)."""
        ...

    async def query_refund(
        self, out_trade_no: str, refund_no: str, refund_placed_at: datetime | None = None
    ) -> RefundQuery: ...

    def acknowledgement(self) -> NotifyAnswer:
        """The answer to a notification that was applied (or was a duplicate)."""
        ...
