"""A settled value-added service fee can be refunded once by finance (issue 10): the charge row records when,
by whom, why and the ledger transaction that gave the money back.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_vas_charges_status"), "vas_charges")
    op.create_check_constraint(
        op.f("ck_vas_charges_status"), "vas_charges", "status IN ('settled', 'failed', 'refunded')"
    )
    op.add_column("vas_charges", sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("vas_charges", sa.Column("refunded_by", sa.String(64), nullable=True))
    op.add_column("vas_charges", sa.Column("refund_reason", sa.String(200), nullable=True))
    op.add_column(
        "vas_charges",
        sa.Column(
            "refund_transaction_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(
                "ledger_transactions.id", name=op.f("fk_vas_charges_refund_transaction_id_ledger_transactions")
            ),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.drop_column("vas_charges", "refund_transaction_id")
    op.drop_column("vas_charges", "refund_reason")
    op.drop_column("vas_charges", "refunded_by")
    op.drop_column("vas_charges", "refunded_at")
    op.execute("UPDATE vas_charges SET status = 'settled' WHERE status = 'refunded'")
    op.drop_constraint(op.f("ck_vas_charges_status"), "vas_charges")
    op.create_check_constraint(op.f("ck_vas_charges_status"), "vas_charges", "status IN ('settled', 'failed')")
