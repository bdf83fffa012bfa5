"""Invoice requests for paid rentals and top-ups (invoice_requests)

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_requests",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("receipt_no", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("buyer_type", sa.String(10), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("tax_id", sa.String(20), nullable=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("vat_rate_percent", sa.Integer(), nullable=True),
        sa.Column("vat_fen", sa.BigInteger(), nullable=True),
        sa.Column("channel", sa.String(30), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invoice_no", sa.String(40), nullable=True),
        sa.Column("reject_reason", sa.String(200), nullable=True),
        sa.CheckConstraint("kind IN ('rental', 'top_up')", name=op.f("ck_invoice_requests_kind")),
        sa.CheckConstraint(
            "status IN ('requested', 'issued', 'rejected', 'cancelled')", name=op.f("ck_invoice_requests_status")
        ),
        sa.CheckConstraint("buyer_type IN ('personal', 'company')", name=op.f("ck_invoice_requests_buyer_type")),
        sa.CheckConstraint(
            "buyer_type = 'personal' OR tax_id IS NOT NULL", name=op.f("ck_invoice_requests_company_tax_id")
        ),
        sa.CheckConstraint(
            "status <> 'issued' OR invoice_no IS NOT NULL", name=op.f("ck_invoice_requests_issued_number")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_requests")),
    )
    op.create_index(op.f("ix_invoice_requests_user_id"), "invoice_requests", ["user_id"])
    op.create_index("ix_invoice_requests_status_created", "invoice_requests", ["status", "created_at"])
    op.create_index(
        "uq_invoice_requests_open",
        "invoice_requests",
        ["kind", "subject_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('requested', 'issued')"),
    )


def downgrade() -> None:
    op.drop_table("invoice_requests")
