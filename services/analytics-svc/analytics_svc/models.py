"""analytics-svc's fact tables, fed only by domain events; plus the kit's outbox and processed events.

Each fact has a unique business key, so an event applied twice (even under another consumer
group) leaves one fact. Personal data is kept to ids and times."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Identity, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)


class Base(DeclarativeBase):
    metadata = metadata


class UserFact(Base):
    __tablename__ = "user_facts"

    user_id: Mapped[uuid.UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class RentalFact(Base):
    """One rental: inserted by `billing.rental.started` (or by `ended` if that came first), completed by `ended`."""

    __tablename__ = "rental_facts"
    __table_args__ = (Index("ix_rental_facts_started_at", "started_at"),)

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
