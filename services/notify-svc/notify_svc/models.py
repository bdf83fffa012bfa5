"""notify-svc's tables: one inbox of messages per user, plus the kit's outbox and processed events."""

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, Index, String, Text
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)


class Category(StrEnum):
    RENTAL = "rental"
    PAYMENT = "payment"
    SYSTEM = "system"
    OPERATION = "operation"


class Base(DeclarativeBase):
    metadata = metadata


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("category IN ('rental', 'payment', 'system', 'operation')", name="category"),
        Index("ix_messages_user_created", "user_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), nullable=False)
    category: Mapped[str] = mapped_column(String(20), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The event that produced the message: a redelivered event never makes a second message.
    source_event_id: Mapped[uuid.UUID | None] = mapped_column(PgUUID(as_uuid=True), nullable=True, unique=True)
