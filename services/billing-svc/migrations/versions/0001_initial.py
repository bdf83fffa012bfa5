"""initial: rentals, outbox, processed_events

Revision ID: 0001
Revises:
Create Date: 2026-11-25 11:59:18.507080
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], unique=False, postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="done", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_processed_events")),
    )
    op.create_table(
        "rentals",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("code", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("command_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("user_exclusive", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("bank_id", sa.String(length=128), nullable=True),
        sa.Column("start_cabinet_id", sa.String(length=128), nullable=True),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("return_cabinet_id", sa.String(length=128), nullable=True),
        sa.Column("returned_report_id", sa.String(length=200), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("eject_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("fee_fen", sa.Integer(), nullable=True),
        sa.Column("charge_id", sa.UUID(), nullable=True),
        sa.Column("period_minutes", sa.Integer(), nullable=False),
        sa.Column("price_per_period_fen", sa.Integer(), nullable=False),
        sa.Column("free_minutes", sa.Integer(), nullable=False),
        sa.Column("daily_cap_fen", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("state <> 'active' OR bank_id IS NOT NULL", name=op.f("ck_rentals_active_has_bank")),
        sa.CheckConstraint(
            "state IN ('unlocking', 'active', 'ended', 'settled', 'unpaid', 'failed')", name=op.f("ck_rentals_state")
        ),
        sa.CheckConstraint(
            "ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at", name=op.f("ck_rentals_end_after_start")
        ),
        sa.CheckConstraint("fee_fen IS NULL OR fee_fen >= 0", name=op.f("ck_rentals_fee_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rentals")),
        sa.UniqueConstraint("charge_id", name=op.f("uq_rentals_charge_id")),
        sa.UniqueConstraint("command_id", name=op.f("uq_rentals_command_id")),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_rentals_user_idempotency_key"),
    )
    op.create_index(
        "ix_rentals_unlocking",
        "rentals",
        ["requested_at"],
        unique=False,
        postgresql_where=sa.text("state = 'unlocking'"),
    )
    op.create_index(
        "ix_rentals_user_history",
        "rentals",
        ["user_id", sa.literal_column("requested_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_index(
        "uq_rentals_bank_active", "rentals", ["bank_id"], unique=True, postgresql_where=sa.text("state = 'active'")
    )
    op.create_index(
        "uq_rentals_user_open",
        "rentals",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("state IN ('unlocking', 'active') AND user_exclusive"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_rentals_user_open",
        table_name="rentals",
        postgresql_where=sa.text("state IN ('unlocking', 'active') AND user_exclusive"),
    )
    op.drop_index("uq_rentals_bank_active", table_name="rentals", postgresql_where=sa.text("state = 'active'"))
    op.drop_index("ix_rentals_user_history", table_name="rentals")
    op.drop_index("ix_rentals_unlocking", table_name="rentals", postgresql_where=sa.text("state = 'unlocking'"))
    op.drop_table("rentals")
    op.drop_table("processed_events")
    op.drop_index("ix_outbox_unpublished", table_name="outbox", postgresql_where=sa.text("published_at IS NULL"))
    op.drop_table("outbox")
