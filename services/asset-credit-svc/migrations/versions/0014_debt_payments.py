"""A rental's unpaid fee paid through a channel (issue 12): one row per payment, order `debt_<id>`.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "debt_payments",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("rental_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(30), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("failure_reason", sa.String(100), nullable=True),
        sa.Column("provider_trade_no", sa.String(100), nullable=True),
        sa.Column(
            "transaction_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("ledger_transactions.id", name=op.f("fk_debt_payments_transaction_id_ledger_transactions")),
            nullable=True,
        ),
        sa.Column(
            "settled_charge_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("charges.charge_id", name=op.f("fk_debt_payments_settled_charge_id_charges")),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_debt_payments_amount_positive")),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_debt_payments_status")),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_debt_payments_user_idempotency_key"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_debt_payments")),
    )
    op.create_index("ix_debt_payments_rental_id", "debt_payments", ["rental_id"])
    op.create_index("ix_debt_payments_user_created", "debt_payments", ["user_id", "created_at"])
    op.create_index(
        "ix_debt_payments_pending", "debt_payments", ["created_at"], postgresql_where=sa.text("status = 'pending'")
    )


def downgrade() -> None:
    op.drop_table("debt_payments")
