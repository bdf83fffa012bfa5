"""billing-svc's tables: rentals (plus the kit's outbox and processed_events)."""

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, DateTime, Index, Integer, String, UniqueConstraint, func, text
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
    start_cabinet_id: Mapped[str | None] = mapped_column(String(128))
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

    # The price that applies to this rental, fixed when it was requested.
    period_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    price_per_period_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    free_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    daily_cap_fen: Mapped[int] = mapped_column(Integer, nullable=False)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint(f"state IN ({_STATES_SQL})", name="state"),
        CheckConstraint("fee_fen IS NULL OR fee_fen >= 0", name="fee_not_negative"),
        CheckConstraint("ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at", name="end_after_start"),
        CheckConstraint("state <> 'active' OR bank_id IS NOT NULL", name="active_has_bank"),
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
    )
