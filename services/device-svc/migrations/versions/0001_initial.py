"""Initial device-svc schema: registry, commands, inbound message ids, outbox, processed events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL"))
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), server_default="done", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_processed_events"),
    )
    op.create_table(
        "cabinets",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("address", sa.String(200), server_default="", nullable=False),
        sa.Column("slot_count", sa.Integer(), nullable=False),
        sa.Column("online", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rssi_dbm", sa.Integer(), nullable=True),
        sa.Column("firmware", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cabinets"),
    )
    op.create_index("ix_cabinets_online_last_seen", "cabinets", ["last_seen_at"], postgresql_where=sa.text("online"))
    op.create_table(
        "slots",
        sa.Column("cabinet_id", sa.String(64), nullable=False),
        sa.Column("slot_no", sa.Integer(), nullable=False),
        sa.Column("bank_id", sa.String(64), nullable=True),
        sa.Column("fault", sa.String(30), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["cabinet_id"], ["cabinets.id"], name="fk_slots_cabinet_id_cabinets"),
        sa.PrimaryKeyConstraint("cabinet_id", "slot_no", name="pk_slots"),
    )
    op.create_index(
        "uq_slots_bank_id", "slots", ["bank_id"], unique=True, postgresql_where=sa.text("bank_id IS NOT NULL")
    )
    op.create_table(
        "banks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(50), server_default="PB-5000", nullable=False),
        sa.Column("battery_pct", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("cabinet_id", sa.String(64), nullable=True),
        sa.Column("slot_no", sa.Integer(), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_report_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('in_cabinet', 'rented', 'faulty', 'maintenance')", name="ck_banks_state"),
        sa.ForeignKeyConstraint(["cabinet_id"], ["cabinets.id"], name="fk_banks_cabinet_id_cabinets"),
        sa.PrimaryKeyConstraint("id", name="pk_banks"),
    )
    op.create_index("ix_banks_cabinet_id", "banks", ["cabinet_id"])
    op.create_table(
        "device_credentials",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("broker_hash", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('cabinet', 'bank')", name="ck_device_credentials_kind"),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_credentials"),
    )
    op.create_table(
        "commands",
        sa.Column("cmd_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("rental_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("code", sa.String(128), nullable=False),
        sa.Column("cabinet_id", sa.String(64), nullable=False),
        sa.Column("bank_id", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('sent', 'succeeded', 'failed', 'expired')", name="ck_commands_status"),
        sa.PrimaryKeyConstraint("cmd_id", name="pk_commands"),
    )
    op.create_index("ix_commands_sent_deadline", "commands", ["deadline"], postgresql_where=sa.text("status = 'sent'"))
    op.create_index(
        "uq_commands_sent_bank", "commands", ["bank_id"], unique=True, postgresql_where=sa.text("status = 'sent'")
    )
    op.create_table(
        "inbound_messages",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("msg_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "msg_id", name="pk_inbound_messages"),
    )
    op.create_index("ix_inbound_messages_received_at", "inbound_messages", ["received_at"])


def downgrade() -> None:
    for table in ("inbound_messages", "commands", "device_credentials", "banks", "slots", "cabinets"):
        op.drop_table(table)
    op.drop_table("processed_events")
    op.drop_table("outbox")
