"""notify-svc's tables: the inbox, support tickets with their threads, plus the kit's outbox and
processed events."""

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
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts.events import NoticeKind, ReportKind, TicketPriority, TicketStatus
from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)


class Category(StrEnum):
    RENTAL = "rental"
    PAYMENT = "payment"
    SYSTEM = "system"
    OPERATIONS = "operations"
    SERVICE = "service"  # customer service: ticket replies
    MARKETING = "marketing"


def _in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    metadata = metadata


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(_in("category", Category), name="category"),
        Index("ix_messages_user_created", "user_id", "created_at", "id"),
        Index("ix_messages_user_unread", "user_id", "category", postgresql_where="read_at IS NULL"),
        Index("uq_messages_campaign_user", "campaign_id", "user_id", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    category: Mapped[str] = mapped_column(String(20), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The event (or ticket entry) that produced the message: a redelivery never makes a second message.
    source_event_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), nullable=True, unique=True)
    # A campaign's message: at most one per (campaign, user), whatever batch or process wrote it.
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), nullable=True)


class Ticket(Base):
    """A user's report (6.1.7) as a support ticket (6.3.9). `status` changes only through
    `tickets.lifecycle.apply`."""

    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint(_in("kind", ReportKind), name="kind"),
        CheckConstraint(_in("status", TicketStatus), name="status"),
        CheckConstraint(_in("priority", TicketPriority), name="priority"),
        Index("ix_tickets_user_created", "user_id", "created_at", "id"),
        Index("ix_tickets_created", "created_at", "id"),
        Index("ix_tickets_open_sla", "sla_due_at", postgresql_where="status NOT IN ('resolved', 'closed')"),
        Index("ix_tickets_bank", "bank_id", postgresql_where="bank_id IS NOT NULL"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    priority: Mapped[str] = mapped_column(String(10), nullable=False)
    # User text, stored as given and served as JSON text: never rendered as markup.
    description: Mapped[str] = mapped_column(Text, nullable=False)
    rental_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True))
    bank_id: Mapped[str | None] = mapped_column(String(64))
    cabinet_id: Mapped[str | None] = mapped_column(String(64))
    assignee: Mapped[str | None] = mapped_column(String(100))
    # A `dispute` ticket's dispute in billing-svc (which alone resolves it).
    dispute_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    sla_due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    overdue_alerted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TicketEntry(Base):
    """One line of a ticket's thread: a user or staff reply (both sides see it), an internal note
    (staff only) or a system line (status changes, a bank's fault cleared)."""

    __tablename__ = "ticket_entries"
    __table_args__ = (
        CheckConstraint("author_kind IN ('user', 'staff', 'system')", name="author_kind"),
        Index("ix_ticket_entries_ticket", "ticket_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    ticket_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("tickets.id"), nullable=False)
    author_kind: Mapped[str] = mapped_column(String(10), nullable=False)
    author: Mapped[str] = mapped_column(String(100), nullable=False)
    internal: Mapped[bool] = mapped_column(Boolean, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Notice(Base):
    """A system or operations notice (6.1.6, 6.3.8). Once published it is in every user's inbox: the
    inbox reads it from here (one row, whatever the audience), and a user's read or delete is a row
    in `notice_receipts`, written only when that user acts."""

    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint(_in("kind", NoticeKind), name="kind"),
        Index("ix_notices_published", "published_at", "id", postgresql_where="published_at IS NOT NULL"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NoticeImage(Base):
    """An uploaded image, checked by its bytes; kept in the database (see docs/service.md)."""

    __tablename__ = "notice_images"
    __table_args__ = (Index("ix_notice_images_notice", "notice_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    notice_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("notices.id"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    content_type: Mapped[str] = mapped_column(String(50), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class NoticeReceipt(Base):
    """One user's state of one notice: read, deleted from the inbox, or both."""

    __tablename__ = "notice_receipts"

    notice_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("notices.id"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PushToken(Base):
    """A phone's push token (APNs device token, FCM registration token), registered by its user. A token
    names one app install: registering it again moves it to whoever registers it now."""

    __tablename__ = "push_tokens"
    __table_args__ = (
        CheckConstraint("platform IN ('ios', 'android')", name="platform"),
        Index("ix_push_tokens_user", "user_id"),
    )

    token: Mapped[str] = mapped_column(String(400), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    platform: Mapped[str] = mapped_column(String(10), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class PushJob(Base):
    """A push to send for an inbox message, written in the message's transaction; the push worker
    sends it after commit (and again after a crash: a job is done only once its outcome is stored)."""

    __tablename__ = "push_jobs"
    __table_args__ = (Index("ix_push_jobs_due", "next_attempt_at", postgresql_where="done_at IS NULL"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    message_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True))
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    critical: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # delivered | no_device | failed | sms_fallback
    outcome: Mapped[str | None] = mapped_column(String(20))
    # Per token: {"<token suffix>": "ok" | "invalid_token" | "unavailable" | ...} of the last attempt.
    results: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    # A campaign's push (marketing: consent is checked again when it is sent).
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True))


class AudienceMember(Base):
    """notify-svc's own projection of what campaigns select users by, fed by other services' events:
    registration (user-svc), the region of their last rental (billing + device-svc), credit level and
    coupons (asset-credit-svc). Keyed by user id: fan-out batches are keyset ranges of it."""

    __tablename__ = "audience"
    __table_args__ = (Index("ix_audience_active", "user_id", postgresql_where="deregistered_at IS NULL"),)

    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deregistered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    division_code: Mapped[str | None] = mapped_column(String(6))
    credit_level: Mapped[str | None] = mapped_column(String(32))
    credit_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_active_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AudienceCoupon(Base):
    """A coupon of a user as asset-credit-svc last reported it; unused while available and not expired."""

    __tablename__ = "audience_coupons"
    __table_args__ = (Index("ix_audience_coupons_user", "user_id", postgresql_where="status = 'available'"),)

    asset_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CabinetRegion(Base):
    """A cabinet's division, learnt from eject and return facts: a rental's region is its cabinet's."""

    __tablename__ = "cabinet_regions"

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    division_code: Mapped[str] = mapped_column(String(6), nullable=False)


class Preference(Base):
    """A user's consent to marketing per channel (none until given) and quiet hours in their time
    zone. Service messages ignore both: they always reach the inbox and push at once."""

    __tablename__ = "preferences"

    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    marketing_inbox: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    marketing_push: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    marketing_sms: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    quiet_start: Mapped[int | None] = mapped_column(Integer)  # minutes after local midnight
    quiet_end: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="Asia/Shanghai")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    CANCELLED = "cancelled"


class Campaign(Base):
    """A marketing message to a segment of the audience, sent in batches: `cursor` is the last user id
    done, committed with each batch's inbox rows, so a crashed fan-out resumes after it. A notice's
    push to every phone is a campaign too (`notice_id` set: no inbox rows, no consent needed)."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(_in("status", CampaignStatus), name="status"),
        Index("ix_campaigns_due", "send_at", postgresql_where="status IN ('scheduled', 'sending')"),
        Index("ix_campaigns_created", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    segment: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    channels: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    notice_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), unique=True)
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cursor: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True))
    batches: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    recipients: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    inbox_sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    push_queued: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sms_sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Marketing SMS held for the end of a recipient's quiet hours (sent later by the SMS sender; `sms_sent`
    # counts them once sent).
    sms_deferred: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    unreached: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class DeferredSms(Base):
    """A campaign's marketing SMS held until the recipient's quiet hours end (an SMS cannot wait on the
    phone as a push does). Sent then through user-svc (`user.send_sms`) if the user still consents."""

    __tablename__ = "deferred_sms"
    __table_args__ = (
        Index("ix_deferred_sms_due", "due_at", postgresql_where="done_at IS NULL"),
        CheckConstraint("outcome IN ('sent', 'no_consent')", name="outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    text: Mapped[str] = mapped_column(String(500), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(16))


class CampaignInteraction(Base):
    """A recipient opened or clicked a campaign's message: one row per (campaign, user, kind), so
    counts are per recipient whatever the number of taps."""

    __tablename__ = "campaign_interactions"
    __table_args__ = (CheckConstraint("kind IN ('open', 'click')", name="kind"),)

    campaign_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CallbackStatus(StrEnum):
    REQUESTED = "requested"
    CALLING = "calling"
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CallbackRequest(Base):
    """A user asked to be called back (human voice service). Staff place the call through the
    telephony provider; its outcome arrives later, signed, and is recorded here and on the ticket.
    `status` changes only through `callbacks.lifecycle.apply`."""

    __tablename__ = "callbacks"
    __table_args__ = (
        CheckConstraint(_in("status", CallbackStatus), name="status"),
        Index("ix_callbacks_queue", "status", "preferred_at", "created_at"),
        Index("ix_callbacks_user", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    ticket_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("tickets.id"), nullable=False)
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    topic: Mapped[str] = mapped_column(Text, nullable=False)
    preferred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    provider_call_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    placed_by: Mapped[str | None] = mapped_column(String(100))
    duration_s: Mapped[int | None] = mapped_column(Integer)
    failure: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class TicketPhoto(Base):
    """A photo the user attached to a report, checked by its bytes and stored like notice images; served
    only through signed URLs handed to the ticket's user and to staff."""

    __tablename__ = "ticket_photos"
    __table_args__ = (Index("ix_ticket_photos_ticket", "ticket_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    ticket_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("tickets.id"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    content_type: Mapped[str] = mapped_column(String(50), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class VasKind(StrEnum):
    PARTNER_OFFER = "partner_offer"  # a partner's product offered in the app
    ADD_ON = "add_on"  # insurance-like cover on a rental (damage cover, a longer return window)
    ADVERTISING = "advertising"  # ads tailored to the user's use, which need consent


class ValueAddedService(Base):
    """A value-added service offered in the app (damage cover, an extended return window); users take it
    only after accepting the current version of its risk notice."""

    __tablename__ = "value_added_services"

    __table_args__ = (
        CheckConstraint(_in("kind", VasKind), name="kind"),
        CheckConstraint("price_fen IS NULL OR price_fen >= 0", name="price_fen"),
    )

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    provider: Mapped[str] = mapped_column(String(100), nullable=False)  # who delivers it (a partner, or us)
    price_fen: Mapped[int | None] = mapped_column(Integer)  # none: free to take
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # off the catalogue


class RiskNotice(Base):
    """One version of a service's risk notice: published once, never changed (a new text is a new
    version, and consent to an older one no longer counts)."""

    __tablename__ = "risk_notices"

    service_code: Mapped[str] = mapped_column(String(40), ForeignKey("value_added_services.code"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    published_by: Mapped[str] = mapped_column(String(100), nullable=False)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ConsentRecord(Base):
    """A user accepted a risk notice's version, or withdrew: append-only (a trigger refuses updates and
    deletes), the evidence of what the user agreed to and when."""

    __tablename__ = "consent_records"
    __table_args__ = (
        CheckConstraint("action IN ('accepted', 'withdrawn')", name="action"),
        Index("ix_consent_records_user", "user_id", "service_code", "at"),
        Index("ix_consent_records_service", "service_code", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    service_code: Mapped[str] = mapped_column(String(40), ForeignKey("value_added_services.code"), nullable=False)
    version: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(10), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    user_agent: Mapped[str | None] = mapped_column(String(200))
    # Why the platform recorded it rather than the user (`payment_failed`: a priced service not paid); none: the user.
    reason: Mapped[str | None] = mapped_column(String(40))


class VasPayment(Base):
    """asset-credit-svc's answer to a priced acceptance (asset.vas_fee.settled / failed), and finance giving a
    paid fee back (asset.vas_fee.refunded): one per consent; its states in vas/payments.py."""

    __tablename__ = "vas_payments"
    __table_args__ = (
        CheckConstraint("status IN ('paid', 'failed', 'refunded')", name="status"),
        CheckConstraint(
            "(status = 'refunded') = (refunded_at IS NOT NULL AND refunded_fen IS NOT NULL)", name="refund_complete"
        ),
    )

    consent_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("consent_records.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    refunded_fen: Mapped[int | None] = mapped_column(BigInteger)
    refund_reason: Mapped[str | None] = mapped_column(String(200))
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AdSlot(StrEnum):
    APP_BANNER = "app_banner"
    CABINET_SCREEN = "cabinet_screen"


class Ad(Base):
    """An advertisement in a slot: shown between `starts_at` and `ends_at`, in its regions (division codes;
    none: everywhere), always labelled as an advertisement. Withdrawn by staff, never deleted: its counts
    stay."""

    __tablename__ = "ads"
    __table_args__ = (
        CheckConstraint(_in("slot", AdSlot), name="slot"),
        CheckConstraint("ends_at > starts_at", name="schedule"),
        Index("ix_ads_slot_ends", "slot", "ends_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    slot: Mapped[str] = mapped_column(String(20), nullable=False)
    advertiser: Mapped[str] = mapped_column(String(100), nullable=False)
    title: Mapped[str] = mapped_column(String(100), nullable=False)
    text: Mapped[str] = mapped_column(String(200), nullable=False)
    media_url: Mapped[str | None] = mapped_column(String(300))
    link_url: Mapped[str | None] = mapped_column(String(300))
    display_s: Mapped[int] = mapped_column(Integer, nullable=False)
    regions: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_by: Mapped[str | None] = mapped_column(String(100))


class AdInteraction(Base):
    """One impression or click of an ad by one viewer on one day (UTC): the key deduplicates, so an app
    that reports the same banner twice, or a user who taps it again, counts once a day."""

    __tablename__ = "ad_interactions"
    __table_args__ = (CheckConstraint("kind IN ('impression', 'click')", name="kind"),)

    ad_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("ads.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    viewer: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AdScreenPlay(Base):
    """How often a cabinet's screen showed an ad in one of its play reports (device.ad_plays.reported): the key
    names the report (the cabinet's msg_id) and the ad, so a replayed report counts once."""

    __tablename__ = "ad_screen_plays"
    __table_args__ = (
        CheckConstraint("plays > 0", name="plays"),
        Index("ix_ad_screen_plays_ad_id", "ad_id"),
    )

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    report_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ad_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("ads.id"), primary_key=True)
    plays: Mapped[int] = mapped_column(Integer, nullable=False)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AdPlaylistState(Base):
    """The cabinet screens' playlist version: bumped (row locked) by each change, so versions are published
    in commit order and device-svc can drop an older one arriving late."""

    __tablename__ = "ad_playlist_state"

    slot: Mapped[str] = mapped_column(String(20), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
