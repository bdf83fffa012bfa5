"""asset-credit-svc's tables: a double-entry ledger (accounts, transactions, postings), top-ups,
charges, plus the kit's outbox and processed events.

Ledger invariants, each also enforced by the database:
- every transaction's postings sum to zero (a deferred constraint trigger checks it at commit);
- an account that may not go negative (every `user_balance`) never does (CHECK);
- postings and transactions are append-only (a trigger refuses UPDATE and DELETE);
- `accounts.balance_fen` is changed only together with a posting, under the account's row lock,
  and each posting records the balance after it.
"""

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)


class Base(DeclarativeBase):
    metadata = metadata


class AccountKind:
    """Account kinds. A kind with a `:` names a counterparty (`provider_clearing:alipay`)."""

    USER_BALANCE = "user_balance"
    USER_DEPOSIT = "user_deposit"
    # Red packets the user holds: money-like, spendable only on rental fees, never withdrawable.
    USER_RED_PACKET = "user_red_packet"
    PLATFORM_REVENUE = "platform_revenue"
    # What promotions cost the platform (red packets granted, coupon and card discounts): an
    # expense account, so its balance is negative.
    PLATFORM_PROMOTIONS = "platform_promotions"
    # What the channels keep of the money they move (their fees, from their daily statements): an expense
    # account, so its balance is negative; revenue net of fees is revenue plus this.
    PLATFORM_PROVIDER_FEES = "platform_provider_fees"
    PROVIDER_CLEARING = "provider_clearing"

    @staticmethod
    def provider_clearing(channel: str) -> str:
        return f"{AccountKind.PROVIDER_CLEARING}:{channel}"


class TransactionKind(StrEnum):
    TOP_UP = "top_up"
    CHARGE = "charge"
    REFUND = "refund"
    PROVIDER_PAYMENT = "provider_payment"  # the user's provider paid (part of) a charge into the wallet
    DEPOSIT = "deposit"
    DEPOSIT_REFUND = "deposit_refund"
    WITHDRAWAL = "withdrawal"
    RED_PACKET_GRANT = "red_packet_grant"
    RED_PACKET_RETURN = "red_packet_return"  # an expired or revoked red packet's remainder
    CARD_PURCHASE = "card_purchase"
    VAS_FEE = "vas_fee"  # a priced value-added service (notify-svc's catalogue), once per consent
    VAS_REFUND = "vas_refund"  # a settled vas_fee given back by finance, once per consent
    PROVIDER_FEE = "provider_fee"  # a channel's fees of a day, as its statement gives them


class TopUpStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ChargeStatus(StrEnum):
    PENDING = "pending"  # only inside the transaction that claims the charge id
    AWAITING_PROVIDER = "awaiting_provider"  # the balance was short; the user's provider pays the rest
    SETTLED = "settled"
    FAILED = "failed"


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("allow_negative OR balance_fen >= 0", name="balance_not_negative"),
        CheckConstraint("kind <> 'user_balance' OR (user_id IS NOT NULL AND NOT allow_negative)", name="user_balance"),
        CheckConstraint(
            "kind <> 'user_red_packet' OR (user_id IS NOT NULL AND NOT allow_negative)", name="user_red_packet"
        ),
        # (user_id, kind) is unique; system accounts (no user) are unique by kind.
        Index("uq_accounts_user_kind", "user_id", "kind", unique=True, postgresql_where=text("user_id IS NOT NULL")),
        Index("uq_accounts_system_kind", "kind", unique=True, postgresql_where=text("user_id IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), nullable=True)
    kind: Mapped[str] = mapped_column(String(100), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, server_default="CNY")
    allow_negative: Mapped[bool] = mapped_column(Boolean, nullable=False)
    balance_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    # The business fact the transaction records (`topup:<id>`, `charge:<charge_id>`): one per fact.
    reference: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Posting(Base):
    __tablename__ = "postings"
    __table_args__ = (
        CheckConstraint("amount_fen <> 0", name="amount_not_zero"),
        UniqueConstraint("transaction_id", "account_id", name="uq_postings_transaction_account"),
        Index("ix_postings_account_id_desc", "account_id", text("id DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transaction_id: Mapped[uuid.UUID] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=False
    )
    account_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    balance_after_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class TopUp(Base):
    __tablename__ = "top_ups"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_top_ups_user_idempotency_key"),
        Index("ix_top_ups_pending_created_at", "created_at", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    channel: Mapped[str] = mapped_column(String(30), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    provider_trade_no: Mapped[str | None] = mapped_column(String(100), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class VasCharge(Base):
    """One row per accepted consent to a priced value-added service (notify-svc's `consent_id`): claimed before
    anything is posted, so a redelivered event changes nothing, and a failure stays a failure."""

    __tablename__ = "vas_charges"
    __table_args__ = (
        CheckConstraint("status IN ('settled', 'failed', 'refunded')", name="status"),
        Index("ix_vas_charges_user_id", "user_id"),
    )

    consent_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    service_code: Mapped[str] = mapped_column(String(40), nullable=False)
    provider: Mapped[str] = mapped_column(String(100), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    failure_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    balance_after_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # A settled fee refunded by finance, once (vas/endpoints.py).
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    refunded_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    refund_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    refund_transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )


class Charge(Base):
    """One row per charge id billing asked for: the natural idempotency key of a charge."""

    __tablename__ = "charges"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'awaiting_provider', 'settled', 'failed')", name="status"),
        CheckConstraint(
            "status <> 'awaiting_provider' OR (provider_channel IS NOT NULL AND provider_amount_fen > 0)",
            name="awaiting_provider_has_order",
        ),
        Index("ix_charges_user_id", "user_id"),
        Index(
            "ix_charges_awaiting_provider",
            "provider_requested_at",
            postgresql_where=text("status = 'awaiting_provider'"),
        ),
        # At most one charge per rental is ever collected (a failed one may be retried).
        Index("uq_charges_rental_settled", "rental_id", unique=True, postgresql_where=text("status = 'settled'")),
    )

    charge_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    failure_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    balance_after_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    source_event_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # When the balance was short: the order at the user's provider for the shortfall.
    provider_channel: Mapped[str | None] = mapped_column(String(30), nullable=True)
    provider_amount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    provider_trade_no: Mapped[str | None] = mapped_column(String(100), nullable=True)
    provider_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    provider_transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The rental's timing (for a card of free minutes) and how a settled fee was covered; the
    # rest (`amount_fen` minus these) was paid from the balance.
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The start cabinet's division (billing's ChargeRequested.region_code): finance's revenue by region.
    region_code: Mapped[str | None] = mapped_column(String(6), nullable=True)
    card_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    coupon_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    red_packet_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class PaymentMethod(Base):
    """The provider a user chose to pay what the balance does not cover."""

    __tablename__ = "payment_methods"
    __table_args__ = (CheckConstraint("channel IN ('alipay', 'wechat', 'bank_card')", name="channel"),)

    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    channel: Mapped[str] = mapped_column(String(30), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class RefundStatus(StrEnum):
    PENDING = "pending"  # only inside the transaction that claims the refund id
    SETTLED = "settled"
    FAILED = "failed"


class Refund(Base):
    """One row per refund id billing asked for (support corrections): money back to the wallet,
    never more than what was collected for the rental."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'settled', 'failed')", name="status"),
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        Index("ix_refunds_rental_id", "rental_id"),
        Index("ix_refunds_user_created", "user_id", "created_at"),
    )

    refund_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    failure_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    source_event_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DepositKind(StrEnum):
    PAY = "pay"
    REFUND = "refund"


class DepositStatus(StrEnum):
    PENDING = "pending"  # pay: waiting for the provider; refund: booked, the provider not yet confirmed
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DepositOperation(Base):
    """A deposit paid through a provider, or refunded back to it (the deposit's history)."""

    __tablename__ = "deposit_operations"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint("kind IN ('pay', 'refund')", name="kind"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_deposit_operations_user_idempotency_key"),
        Index("ix_deposit_operations_user_created", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    channel: Mapped[str] = mapped_column(String(30), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    # For a refund: the pay operation whose provider order it refunds.
    pay_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), ForeignKey("deposit_operations.id"))
    source: Mapped[str] = mapped_column(String(30), nullable=False)  # user | deregistered
    provider_trade_no: Mapped[str | None] = mapped_column(String(100), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OpenRental(Base):
    """Rentals billing reported started and not yet ended or failed (billing.rentals.v1): a user
    with one is renting, so the deposit stays."""

    __tablename__ = "open_rentals"

    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False, index=True)
    closed: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))


class Withdrawal(Base):
    """Balance paid back to where it came from: refunds of the user's top-ups, newest first."""

    __tablename__ = "withdrawals"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_withdrawals_user_idempotency_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class WithdrawalPart(Base):
    """The part of a withdrawal refunded through one top-up's provider order."""

    __tablename__ = "withdrawal_parts"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint("status IN ('pending', 'succeeded')", name="status"),
        Index("ix_withdrawal_parts_top_up_id", "top_up_id"),
        Index("ix_withdrawal_parts_pending", "created_at", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    withdrawal_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("withdrawals.id"), nullable=False)
    top_up_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("top_ups.id"), nullable=False)
    channel: Mapped[str] = mapped_column(String(30), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CreditScore(Base):
    """A user's credit score (clause 6.3.4); created at the initial score on first use."""

    __tablename__ = "credit_scores"
    __table_args__ = (CheckConstraint("score >= 0 AND score <= 1000", name="score_range"),)

    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class CreditChange(Base):
    """Every change of a score: why, and from which event (or which admin). Append-only; one
    change per (source id, reason), so a redelivered event changes nothing."""

    __tablename__ = "credit_changes"
    __table_args__ = (
        UniqueConstraint("source_id", "reason", name="uq_credit_changes_source_reason"),
        Index("ix_credit_changes_user_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    delta: Mapped[int] = mapped_column(Integer, nullable=False)
    score_after: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(50), nullable=False)
    source: Mapped[str] = mapped_column(String(100), nullable=False)  # event type, or `admin`
    source_id: Mapped[str] = mapped_column(String(200), nullable=False)  # event/charge id, or admin key
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


# ---- virtual assets: coupons, red packets, cards ------------------------------------------


class AssetKind(StrEnum):
    COUPON = "coupon"
    RED_PACKET = "red_packet"
    CARD = "card"


class AssetStatus(StrEnum):
    AVAILABLE = "available"
    USED = "used"  # a coupon applied, a red packet or card spent to the last fen/minute
    EXPIRED = "expired"
    REVOKED = "revoked"


class AssetTemplate(Base):
    """What administrators define and issue from: a coupon (amount or percentage off, minimum
    spend), a red packet (an amount) or a card (free minutes, optionally for sale)."""

    __tablename__ = "asset_templates"
    __table_args__ = (
        CheckConstraint("kind IN ('coupon', 'red_packet', 'card')", name="kind"),
        CheckConstraint(
            "kind <> 'coupon' OR ((amount_off_fen > 0) <> (percent_off IS NOT NULL))", name="coupon_one_discount"
        ),
        CheckConstraint("percent_off IS NULL OR percent_off BETWEEN 1 AND 100", name="percent_range"),
        CheckConstraint("kind <> 'red_packet' OR amount_fen > 0", name="red_packet_amount"),
        CheckConstraint("kind <> 'card' OR card_minutes > 0", name="card_minutes"),
        CheckConstraint("valid_days IS NOT NULL OR valid_until IS NOT NULL", name="has_validity"),
        CheckConstraint("min_spend_fen >= 0", name="min_spend_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    amount_off_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    percent_off: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_discount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    min_spend_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    amount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    card_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    price_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # a card users may buy
    valid_days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # from issuance
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class UserAsset(Base):
    """One coupon, red packet or card a user holds. Its rules are its template's."""

    __tablename__ = "user_assets"
    __table_args__ = (
        CheckConstraint("kind IN ('coupon', 'red_packet', 'card')", name="kind"),
        CheckConstraint("status IN ('available', 'used', 'expired', 'revoked')", name="status"),
        CheckConstraint("remaining_fen IS NULL OR remaining_fen >= 0", name="remaining_not_negative"),
        CheckConstraint("minutes_remaining IS NULL OR minutes_remaining >= 0", name="minutes_not_negative"),
        CheckConstraint("kind <> 'coupon' OR status <> 'used' OR used_rental_id IS NOT NULL", name="coupon_used_on"),
        # Issuing is idempotent on (template, user, key).
        UniqueConstraint("template_id", "user_id", "issue_key", name="uq_user_assets_template_user_key"),
        # At most one coupon per rental.
        Index(
            "uq_user_assets_coupon_rental",
            "used_rental_id",
            unique=True,
            postgresql_where=text("kind = 'coupon' AND status = 'used'"),
        ),
        Index("ix_user_assets_user_status", "user_id", "status"),
        Index("ix_user_assets_expiring", "expires_at", postgresql_where=text("status = 'available'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    template_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("asset_templates.id"))
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    issue_key: Mapped[str] = mapped_column(String(200), nullable=False)
    source: Mapped[str] = mapped_column(String(30), nullable=False)  # admin | purchase
    issued_by: Mapped[str] = mapped_column(String(200), nullable=False)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    remaining_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # red packet
    minutes_remaining: Mapped[int | None] = mapped_column(Integer, nullable=True)  # card
    used_rental_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AssetHistory(Base):
    """What happened to an asset: issued, applied to a rental, expired, revoked. Append-only."""

    __tablename__ = "asset_history"
    __table_args__ = (
        CheckConstraint("action IN ('issued', 'applied', 'expired', 'revoked')", name="action"),
        # A coupon is applied at most once, whatever races.
        Index(
            "uq_asset_history_coupon_applied",
            "asset_id",
            unique=True,
            postgresql_where=text("kind = 'coupon' AND action = 'applied'"),
        ),
        # An asset is applied at most once per charge.
        Index(
            "uq_asset_history_applied_charge",
            "asset_id",
            "charge_id",
            unique=True,
            postgresql_where=text("action = 'applied'"),
        ),
        Index("ix_asset_history_user", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    asset_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("user_assets.id"), nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    minutes: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rental_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), nullable=True)
    charge_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class WaivedRental(Base):
    """Rentals whose unpaid fee support waived (billing.debt.waived): no longer owed."""

    __tablename__ = "waived_rentals"

    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False, index=True)
    waived_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


# ---- the channels' daily statements and their reconciliation ----------------------------------


class StatementLineRow(Base):
    """A line of a channel's daily statement (payments by order number, refunds by our refund number); a
    statement fetched again replaces its lines."""

    __tablename__ = "statement_lines"
    __table_args__ = (
        CheckConstraint("kind IN ('payment', 'refund')", name="kind"),
        Index("ix_statement_lines_channel_date", "channel", "bill_date"),
    )

    channel: Mapped[str] = mapped_column(String(30), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    number: Mapped[str] = mapped_column(String(100), primary_key=True)
    bill_date: Mapped[date] = mapped_column(Date, nullable=False)
    out_trade_no: Mapped[str] = mapped_column(String(100), nullable=False)
    trade_no: Mapped[str] = mapped_column(String(100), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class StatementRun(Base):
    """The last reconciliation of one channel's day: totals of both sides and how many mismatches."""

    __tablename__ = "statement_runs"

    channel: Mapped[str] = mapped_column(String(30), primary_key=True)
    bill_date: Mapped[date] = mapped_column(Date, primary_key=True)
    reconciled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    lines: Mapped[int] = mapped_column(Integer, nullable=False)
    statement_payments_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    statement_refunds_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    statement_fees_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    our_payments_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    our_refunds_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    mismatches: Mapped[int] = mapped_column(Integer, nullable=False)


class StatementMismatch(Base):
    """A difference between a channel's statement and our records; replaced when the day is reconciled again."""

    __tablename__ = "statement_mismatches"
    __table_args__ = (
        CheckConstraint("kind IN ('payment', 'refund')", name="kind"),
        CheckConstraint(
            "problem IN ('missing_on_our_side', 'missing_on_their_side', 'amount_differs')", name="problem"
        ),
        Index("ix_statement_mismatches_channel_date", "channel", "bill_date"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    channel: Mapped[str] = mapped_column(String(30), nullable=False)
    bill_date: Mapped[date] = mapped_column(Date, nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    number: Mapped[str] = mapped_column(String(100), nullable=False)
    problem: Mapped[str] = mapped_column(String(30), nullable=False)
    our_amount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    our_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    their_amount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    trade_no: Mapped[str | None] = mapped_column(String(100), nullable=True)


class InvoiceRequest(Base):
    """A user's request for an invoice of a paid rental or a succeeded top-up, with what the invoice will say
    (the receipt's amounts when asked); `status` moves only along `invoices.service.TRANSITIONS`."""

    __tablename__ = "invoice_requests"
    __table_args__ = (
        CheckConstraint("kind IN ('rental', 'top_up')", name="kind"),
        CheckConstraint("status IN ('requested', 'issued', 'rejected', 'cancelled')", name="status"),
        CheckConstraint("buyer_type IN ('personal', 'company')", name="buyer_type"),
        CheckConstraint("buyer_type = 'personal' OR tax_id IS NOT NULL", name="company_tax_id"),
        CheckConstraint("status <> 'issued' OR invoice_no IS NOT NULL", name="issued_number"),
        # One open request (requested or issued) per receipt.
        Index(
            "uq_invoice_requests_open",
            "kind",
            "subject_id",
            unique=True,
            postgresql_where=text("status IN ('requested', 'issued')"),
        ),
        Index("ix_invoice_requests_status_created", "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    subject_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    receipt_no: Mapped[str] = mapped_column(String(40), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    buyer_type: Mapped[str] = mapped_column(String(10), nullable=False)
    title: Mapped[str] = mapped_column(String(100), nullable=False)
    tax_id: Mapped[str | None] = mapped_column(String(20), nullable=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    vat_rate_percent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    vat_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    channel: Mapped[str | None] = mapped_column(String(30), nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    invoice_no: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reject_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)


# ---- a rental's unpaid fee paid through a channel ---------------------------------------------


class DebtPaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"  # the channel paid: the money is in the wallet, and the rental paid from it if still owed
    FAILED = "failed"  # declined, or not paid in time (`failure_reason`): the rental stays owed and payable


class DebtPayment(Base):
    """The user paying a rental's unpaid fee through a channel (order `debt_<id>`). Its verified notification
    credits the wallet (`provider_payment`) and settles the rental's last failed charge from it in the same
    transaction (`settled_charge_id`); when the rental is no longer owed by then, the money stays in the wallet."""

    __tablename__ = "debt_payments"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_debt_payments_user_idempotency_key"),
        Index("ix_debt_payments_user_created", "user_id", "created_at"),
        Index("ix_debt_payments_pending", "created_at", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False, index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    channel: Mapped[str] = mapped_column(String(30), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    failure_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    provider_trade_no: Mapped[str | None] = mapped_column(String(100), nullable=True)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("ledger_transactions.id"), nullable=True
    )
    settled_charge_id: Mapped[uuid.UUID | None] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("charges.charge_id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
