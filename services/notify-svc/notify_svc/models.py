"""notify-svc's tables: the inbox, support tickets with their threads, plus the kit's outbox and
processed events."""

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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
