"""analytics-svc's fact tables, fed only by domain events; plus the kit's outbox and processed events.

Each fact has a unique business key, so an event applied twice (even under another consumer
group) leaves one fact. Personal data is kept to ids, times and a birth year (erased at deregistration)."""

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)


class Base(DeclarativeBase):
    metadata = metadata


class UserFact(Base):
    __tablename__ = "user_facts"
    __table_args__ = (
        Index(
            "ix_user_facts_erasure_due",
            "deregistered_at",
            postgresql_where=text("deregistered_at IS NOT NULL AND pseudonymised_at IS NULL"),
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    # Null while only rentals are known (their registration not yet consumed).
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The earliest rental start seen (LEAST of every one, so arrival order does not matter).
    first_rental_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The newest credit change (`asset.credit.changed`, by its time); null: none seen (initial score).
    credit_level: Mapped[str | None] = mapped_column(String(20), nullable=True)
    deposit_free: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    credit_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # From `user.user.registered` (the year only; null: not given), for age bands. Erased at deregistration,
    # and never set again once `deregistered_at` is known (a late registration event; migration 0015).
    birth_year: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    deregistered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the user's rentals, days and regions were moved to a pseudonym (analytics_svc/erasure.py).
    pseudonymised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RentalFact(Base):
    """One rental: inserted by `billing.rental.started` (or by `ended` if that came first), completed by `ended`."""

    __tablename__ = "rental_facts"
    __table_args__ = (
        Index("ix_rental_facts_started_at", "started_at"),
        # A return finds the rental it ended (migration 0011).
        Index("ix_rental_facts_unplaced_return", "bank_id", postgresql_where=text("return_division IS NULL")),
    )

    rental_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    bank_id: Mapped[str] = mapped_column(String(64), nullable=False)
    cabinet_id: Mapped[str] = mapped_column(String(64), nullable=False)
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    return_cabinet_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duration_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fee_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Where (contracts.regions): from the eject fact, else the cabinet's region known at the time.
    start_division: Mapped[str | None] = mapped_column(String(6), nullable=True)
    start_cell: Mapped[str | None] = mapped_column(String(16), nullable=True)
    return_division: Mapped[str | None] = mapped_column(String(6), nullable=True)
    return_cell: Mapped[str | None] = mapped_column(String(16), nullable=True)
    purchased: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")


class ReturnFact(Base):
    __tablename__ = "return_facts"
    __table_args__ = (
        UniqueConstraint("cabinet_id", "report_id", name="uq_return_facts_cabinet_report"),
        Index("ix_return_facts_returned_at", "returned_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    report_id: Mapped[str] = mapped_column(String(128), nullable=False)
    bank_id: Mapped[str] = mapped_column(String(64), nullable=False)
    cabinet_id: Mapped[str] = mapped_column(String(64), nullable=False)
    slot: Mapped[int] = mapped_column(Integer, nullable=False)
    battery_pct: Mapped[int | None] = mapped_column(Integer, nullable=True)
    returned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    clock_adjusted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    division: Mapped[str | None] = mapped_column(String(6), nullable=True)
    cell: Mapped[str | None] = mapped_column(String(16), nullable=True)


class CabinetRegion(Base):
    """The newest region known for a cabinet (by event time), from any fact that carries one."""

    __tablename__ = "cabinet_regions"

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    division: Mapped[str | None] = mapped_column(String(6), nullable=True)
    cell: Mapped[str | None] = mapped_column(String(16), nullable=True)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The newest stock report (cabinet inventories): banks physically in its slots.
    banks_present: Mapped[int | None] = mapped_column(Integer, nullable=True)
    banks_rentable: Mapped[int | None] = mapped_column(Integer, nullable=True)
    slot_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stock_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BankFact(Base):
    """A bank's newest known state by event time: in_cabinet, rented, faulty (a fault seen after its
    last movement), lost (sold by the purchase ceiling); long rentals count as lost when queried."""

    __tablename__ = "bank_facts"
    __table_args__ = (Index("ix_bank_facts_division", "division"),)

    # Independent registers, each keeping its newest value whatever order events arrive in: the state (None
    # while only the bank's own readings are known), the place (cabinet, division, cell as of `place_at`).
    bank_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    cabinet_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    division: Mapped[str | None] = mapped_column(String(6), nullable=True)
    cell: Mapped[str | None] = mapped_column(String(16), nullable=True)
    state_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    place_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    model: Mapped[str | None] = mapped_column(String(50), nullable=True)
    # Attributes (bank analyses): from its ejects and its own module's reports, each the newest by its time.
    in_service_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    charge_cycles: Mapped[int | None] = mapped_column(Integer, nullable=True)
    health_pct: Mapped[int | None] = mapped_column(Integer, nullable=True)
    health_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cycles_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UserDay(Base):
    """A user active (started a rental) on a local day, in a division ('' when unknown)."""

    __tablename__ = "user_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    division: Mapped[str] = mapped_column(String(6), primary_key=True, server_default="")


class ActiveUserPeriod(Base):
    """A user active in a day, ISO week or month (`grain` d, w, m), with the region prefixes they were active
    in there ('' everywhere, province, city, district): `active_users.py` keeps it at ingest."""

    __tablename__ = "active_user_periods"

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    period: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    prefixes: Mapped[list[str]] = mapped_column(ARRAY(String(6)), nullable=False)


class ActiveUserCount(Base):
    """Distinct users active per grain, period and region prefix, and how many of them rented first ever then."""

    __tablename__ = "active_user_counts"

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    period: Mapped[date] = mapped_column(Date, primary_key=True)
    region: Mapped[str] = mapped_column(String(6), primary_key=True)
    active: Mapped[int] = mapped_column(Integer, nullable=False)
    new: Mapped[int] = mapped_column(Integer, nullable=False)


class RentalRollup(Base):
    """Rentals per UTC hour of their start, start division and cell, and return division ('' when
    unknown): rebuilt from `rental_facts` for every hour a fact changed in (`rollup_dirty_hours`),
    so a late or repeated event lands in its own hour and is never counted twice."""

    __tablename__ = "rental_rollup_hourly"

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    start_division: Mapped[str] = mapped_column(String(6), primary_key=True)
    start_cell: Mapped[str] = mapped_column(String(16), primary_key=True)
    return_division: Mapped[str] = mapped_column(String(6), primary_key=True)
    rentals: Mapped[int] = mapped_column(Integer, nullable=False)
    returned: Mapped[int] = mapped_column(Integer, nullable=False)


class RollupDirtyHour(Base):
    __tablename__ = "rollup_dirty_hours"

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


class SupervisionAccess(Base):
    """Every request the supervision platform's credential made (clause 5: each access audited)."""

    __tablename__ = "supervision_access_log"
    __table_args__ = (Index("ix_supervision_access_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    token_id: Mapped[str] = mapped_column(String(64), nullable=False)
    method: Mapped[str] = mapped_column(String(10), nullable=False)
    path: Mapped[str] = mapped_column(String(200), nullable=False)
    query: Mapped[str] = mapped_column(String(500), nullable=False)
    regions: Mapped[str] = mapped_column(String(200), nullable=False)


class RefusalFact(Base):
    """A scan of a cabinet refused because it held no rentable bank (`device.eject.failed`,
    `no_rentable_bank`): demand the cabinet could not serve."""

    __tablename__ = "refusal_facts"
    __table_args__ = (Index("ix_refusal_facts_at", "at"),)

    command_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(String(40), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class BankPositionFact(Base):
    """A bank module's reported position, kept as its H3 cell (about 460 m) and division, never the exact
    point: the supervision feed's `/telemetry` (a rented bank's points carry the trip's keyed id)."""

    __tablename__ = "bank_position_facts"
    __table_args__ = (Index("ix_bank_position_facts_at", "at"),)

    bank_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    cell: Mapped[str] = mapped_column(String(16), nullable=False)
    division: Mapped[str | None] = mapped_column(String(6), nullable=True)
    battery_pct: Mapped[int | None] = mapped_column(Integer, nullable=True)


class HotspotAlert(Base):
    """A cell that ran dry or full (analytics_svc/hotspots): open while `cleared_at` is null, at most
    one open per cell and kind; the figures and suggested moves are those of the latest evaluation."""

    __tablename__ = "hotspot_alerts"
    __table_args__ = (
        Index("uq_hotspot_alerts_open", "cell", "kind", unique=True, postgresql_where=text("cleared_at IS NULL")),
        Index("ix_hotspot_alerts_raised_at", "raised_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    cell: Mapped[str] = mapped_column(String(16), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    division: Mapped[str | None] = mapped_column(String(6), nullable=True)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    borrows: Mapped[int] = mapped_column(Integer, nullable=False)
    refused: Mapped[int] = mapped_column(Integer, nullable=False)
    banks_available: Mapped[int] = mapped_column(Integer, nullable=False)
    free_slots: Mapped[int] = mapped_column(Integer, nullable=False)
    moves: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)


class DevicePresence(Base):
    """A cabinet's or bank module's newest online state (`device.presence.changed`, by event time). For an
    offline device `last_seen_at` is final: it was last heard then."""

    __tablename__ = "device_presence"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    online: Mapped[bool] = mapped_column(Boolean, nullable=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DepositFact(Base):
    """A deposit paid (`kind` pay, `at` when paid) or a refund (`kind` refund, `at` when requested,
    `paid_at` once the provider paid it). Only ids, amounts and times: for the regulator's aggregates."""

    __tablename__ = "deposit_facts"
    __table_args__ = (Index("ix_deposit_facts_kind_at", "kind", "at"),)

    operation_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookSubscription(Base):
    """A partner's subscription: the event types it wants (a filter), where, and the secret that signs them."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    partner: Mapped[str] = mapped_column(String(100), nullable=False)
    url: Mapped[str] = mapped_column(String(500), nullable=False)
    secret: Mapped[str] = mapped_column(String(100), nullable=False)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(100)), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class WebhookDelivery(Base):
    """One event for one subscription: pending (due at `next_attempt_at`), delivered, or dead (the dead-letter
    list, after `WEBHOOK_MAX_ATTEMPTS`); replayed by hand back to pending."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_webhook_deliveries_subscription_event"),
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("webhook_subscriptions.id"), nullable=False
    )
    event_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(12), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookAttempt(Base):
    """The delivery log: every POST, its answer or error, and how long it took."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        PgUUID(as_uuid=True), ForeignKey("webhook_deliveries.id"), nullable=False
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)


class WebhookPartnerLimit(Base):
    """A partner's delivery budget, shared by all its subscriptions and replicas: a token bucket refilled at
    `per_minute` (None: `WEBHOOK_PARTNER_PER_MINUTE`) holding at most one second's worth (at least one).
    The row is locked for a delivery pass, so two replicas never spend it twice."""

    __tablename__ = "webhook_partner_limits"
    __table_args__ = (CheckConstraint("per_minute IS NULL OR per_minute > 0", name="per_minute"),)

    partner: Mapped[str] = mapped_column(String(100), primary_key=True)
    per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens: Mapped[float] = mapped_column(Float, nullable=False)
    refilled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
