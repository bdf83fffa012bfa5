"""Priced value-added services are charged once per consent (vas_charges; ledger kind vas_fee)

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vas_charges",
        sa.Column("consent_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("service_code", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("failure_reason", sa.String(40), nullable=True),
        sa.Column("balance_after_fen", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('settled', 'failed')", name=op.f("ck_vas_charges_status")),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_vas_charges_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_vas_charges")),
    )
    op.create_index("ix_vas_charges_user_id", "vas_charges", ["user_id"])


def downgrade() -> None:
    op.drop_table("vas_charges")
