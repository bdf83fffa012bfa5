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
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
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
    PLATFORM_REVENUE = "platform_revenue"
    PROVIDER_CLEARING = "provider_clearing"

    @staticmethod
    def provider_clearing(channel: str) -> str:
        return f"{AccountKind.PROVIDER_CLEARING}:{channel}"


class TransactionKind(StrEnum):
    TOP_UP = "top_up"
    CHARGE = "charge"


class TopUpStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ChargeStatus(StrEnum):
    PENDING = "pending"  # only inside the transaction that claims the charge id
    SETTLED = "settled"
    FAILED = "failed"


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("allow_negative OR balance_fen >= 0", name="balance_not_negative"),
        CheckConstraint("kind <> 'user_balance' OR (user_id IS NOT NULL AND NOT allow_negative)", name="user_balance"),
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


class Charge(Base):
    """One row per charge id billing asked for: the natural idempotency key of a charge."""

    __tablename__ = "charges"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'settled', 'failed')", name="status"),
        Index("ix_charges_user_id", "user_id"),
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
