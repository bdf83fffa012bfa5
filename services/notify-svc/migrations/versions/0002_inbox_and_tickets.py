"""inbox categories (operations, service, marketing), unread index; support tickets and their threads

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CATEGORIES = "category IN ('rental', 'payment', 'system', 'operations', 'service', 'marketing')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_messages_category"), "messages", type_="check")
    op.execute("UPDATE messages SET category = 'operations' WHERE category = 'operation'")
    op.create_check_constraint(op.f("ck_messages_category"), "messages", CATEGORIES)
    op.create_index(
        "ix_messages_user_unread",
        "messages",
        ["user_id", "category"],
        unique=False,
        postgresql_where=sa.text("read_at IS NULL"),
    )
    op.create_table(
        "tickets",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("rental_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("bank_id", sa.String(length=64), nullable=True),
        sa.Column("cabinet_id", sa.String(length=64), nullable=True),
        sa.Column("assignee", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sla_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overdue_alerted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('faulty_bank', 'damaged_cable', 'abuse', 'app_problem', 'other')", name=op.f("ck_tickets_kind")
        ),
        sa.CheckConstraint(
            "status IN ('new', 'assigned', 'waiting_user', 'resolved', 'closed', 'reopened')",
            name=op.f("ck_tickets_status"),
        ),
        sa.CheckConstraint("priority IN ('low', 'normal', 'high', 'urgent')", name=op.f("ck_tickets_priority")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
    )
    op.create_index("ix_tickets_user_created", "tickets", ["user_id", "created_at", "id"], unique=False)
    op.create_index("ix_tickets_created", "tickets", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_tickets_open_sla",
        "tickets",
        ["sla_due_at"],
        unique=False,
        postgresql_where=sa.text("status NOT IN ('resolved', 'closed')"),
    )
    op.create_index(
        "ix_tickets_bank", "tickets", ["bank_id"], unique=False, postgresql_where=sa.text("bank_id IS NOT NULL")
    )
    op.create_table(
        "ticket_entries",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("ticket_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("author_kind", sa.String(length=10), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("author_kind IN ('user', 'staff', 'system')", name=op.f("ck_ticket_entries_author_kind")),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name=op.f("fk_ticket_entries_ticket_id_tickets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_entries")),
    )
    op.create_index("ix_ticket_entries_ticket", "ticket_entries", ["ticket_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ticket_entries_ticket", table_name="ticket_entries")
    op.drop_table("ticket_entries")
    op.drop_index("ix_tickets_bank", table_name="tickets")
    op.drop_index("ix_tickets_open_sla", table_name="tickets")
    op.drop_index("ix_tickets_created", table_name="tickets")
    op.drop_index("ix_tickets_user_created", table_name="tickets")
    op.drop_table("tickets")
    op.drop_index("ix_messages_user_unread", table_name="messages")
    op.drop_constraint(op.f("ck_messages_category"), "messages", type_="check")
    op.execute("UPDATE messages SET category = 'operation' WHERE category = 'operations'")
    op.execute("DELETE FROM messages WHERE category IN ('service', 'marketing')")
    op.create_check_constraint(
        op.f("ck_messages_category"), "messages", "category IN ('rental', 'payment', 'system', 'operation')"
    )
