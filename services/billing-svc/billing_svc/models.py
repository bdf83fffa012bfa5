"""billing-svc's tables: rentals, unmatched returns, disputes and the corrections audit
(plus the kit's outbox and processed_events)."""

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)


class Base(DeclarativeBase):
    metadata = metadata


class RentalState(StrEnum):
    UNLOCKING = "unlocking"  # EjectBank sent, waiting for the device's outcome
    ACTIVE = "active"  # bank ejected, the meter runs
    ENDED = "ended"  # bank returned, fee computed, charge requested
    SETTLED = "settled"  # fee collected (or nothing to collect)
    UNPAID = "unpaid"  # the charge failed; the user owes the fee
    FAILED = "failed"  # no bank was ejected; never charged


OPEN_STATES = (RentalState.UNLOCKING, RentalState.ACTIVE)
_STATES_SQL = ", ".join(f"'{s.value}'" for s in RentalState)


class Rental(Base):
    __tablename__ = "rentals"

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    code: Mapped[str] = mapped_column(String(128), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    command_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False, unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # When false the rental does not count for the one-open-rental-per-user index
    # (settings.one_active_rental_per_user=false at borrow time).
    user_exclusive: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    bank_id: Mapped[str | None] = mapped_column(String(128))
    bank_model: Mapped[str | None] = mapped_column(String(50))
    start_cabinet_id: Mapped[str | None] = mapped_column(String(128))
    # The start cabinet's division (GB/T 2260) as device-svc's eject reported it: finance's revenue by region.
    region_code: Mapped[str | None] = mapped_column(String(6))
    slot: Mapped[int | None] = mapped_column(Integer)
    return_cabinet_id: Mapped[str | None] = mapped_column(String(128))
    returned_report_id: Mapped[str | None] = mapped_column(String(200))

    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    eject_deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    fee_fen: Mapped[int | None] = mapped_column(Integer)
    charge_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), unique=True)
    # 0 for the charge requested at the end; +1 for each manual payment of an unpaid rental.
    charge_attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # Set when a late BankEjected turned a failed rental active (the user holds the bank).
    revived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # The price that applies to this rental, fixed when it was requested.
    period_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    price_per_period_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    free_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    daily_cap_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    purchase_ceiling_fen: Mapped[int | None] = mapped_column(Integer)
    plan_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True))
    # The fee reached the purchase ceiling before the bank came back: the bank is the user's.
    purchased: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # How the fee was covered when it was collected (asset.charge.settled): discounts from a card,
    # a coupon and red packets, and what the user paid (balance/provider; less refunds since).
    card_fen: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    coupon_fen: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    red_packet_fen: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    paid_fen: Mapped[int | None] = mapped_column(Integer)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint(f"state IN ({_STATES_SQL})", name="state"),
        CheckConstraint("fee_fen IS NULL OR fee_fen >= 0", name="fee_not_negative"),
        CheckConstraint("ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at", name="end_after_start"),
        CheckConstraint("state <> 'active' OR bank_id IS NOT NULL", name="active_has_bank"),
        CheckConstraint(
            "card_fen >= 0 AND coupon_fen >= 0 AND red_packet_fen >= 0 AND (paid_fen IS NULL OR paid_fen >= 0)",
            name="breakdown_not_negative",
        ),
        UniqueConstraint("user_id", "idempotency_key", name="uq_rentals_user_idempotency_key"),
        # At most one open (unlocking/active) rental per user.
        Index(
            "uq_rentals_user_open",
            "user_id",
            unique=True,
            postgresql_where=text("state IN ('unlocking', 'active') AND user_exclusive"),
        ),
        # A bank is in at most one active rental.
        Index("uq_rentals_bank_active", "bank_id", unique=True, postgresql_where=text("state = 'active'")),
        Index("ix_rentals_user_history", "user_id", text("requested_at DESC"), text("id DESC")),
        Index("ix_rentals_unlocking", "requested_at", postgresql_where=text("state = 'unlocking'")),
        Index("ix_rentals_user_unpaid", "user_id", postgresql_where=text("state = 'unpaid'")),
        # A purchased bank that comes back is bought back (billing_svc/buyback.py).
        Index("ix_rentals_purchased_bank", "bank_id", "ended_at", postgresql_where=text("purchased")),
    )


class UnmatchedReturn(Base):
    """A return report with no active rental for its bank when it arrived (it may have overtaken
    the eject event, which travels on another topic). Re-checked when a rental of the bank starts
    and by the reconciliation sweep; `rental_id` is set once it ended a rental."""

    __tablename__ = "unmatched_returns"

    report_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    bank_id: Mapped[str] = mapped_column(String(128), nullable=False)
    cabinet_id: Mapped[str] = mapped_column(String(128), nullable=False)
    returned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    rental_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), ForeignKey("rentals.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())

    __table_args__ = (
        Index("ix_unmatched_returns_open", "bank_id", "received_at", postgresql_where=text("rental_id IS NULL")),
    )


class DisputeState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"  # support corrected the rental
    REJECTED = "rejected"  # support found nothing to correct


class Dispute(Base):
    __tablename__ = "disputes"

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("rentals.id"), nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('open', 'resolved', 'rejected')", name="state"),
        # One open dispute per rental.
        Index("uq_disputes_rental_open", "rental_id", unique=True, postgresql_where=text("state = 'open'")),
        Index("ix_disputes_state_created", "state", "created_at"),
    )


class RentalCorrection(Base):
    """Audit of every change support made to a rental: who, when, why, before and after."""

    __tablename__ = "rental_corrections"

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("rentals.id"), nullable=False)
    dispute_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), ForeignKey("disputes.id"))
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    actor_roles: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    before: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    after: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    refund_fen: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    refund_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())

    __table_args__ = (
        CheckConstraint("refund_fen >= 0", name="refund_not_negative"),
        UniqueConstraint("actor", "idempotency_key", name="uq_rental_corrections_actor_idempotency_key"),
    )


class PricingPlan(Base):
    """A price for a cabinet (scope `cabinet`, value = the cabinet id), a region (scope `region`,
    value = a prefix of cabinet ids, the longest match wins) or everywhere (scope `default`).
    A rental keeps the plan's price as of borrowing; editing a plan changes only later rentals."""

    __tablename__ = "pricing_plans"

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    scope: Mapped[str] = mapped_column(String(20), nullable=False)
    scope_value: Mapped[str] = mapped_column(String(128), nullable=False, server_default="")
    period_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    price_per_period_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    free_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    daily_cap_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    purchase_ceiling_fen: Mapped[int] = mapped_column(Integer, nullable=False, server_default="9900")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    updated_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())

    __table_args__ = (
        CheckConstraint("scope IN ('default', 'region', 'cabinet')", name="scope"),
        CheckConstraint(
            "period_minutes > 0 AND price_per_period_fen >= 0 AND free_minutes >= 0 AND daily_cap_fen >= 0",
            name="price_valid",
        ),
        CheckConstraint("purchase_ceiling_fen IS NULL OR purchase_ceiling_fen > 0", name="ceiling_positive"),
        # One active plan per scope and value.
        Index("uq_pricing_plans_active_scope", "scope", "scope_value", unique=True, postgresql_where=text("active")),
    )
