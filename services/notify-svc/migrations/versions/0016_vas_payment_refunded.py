"""A priced value-added service's fee given back by finance (asset.vas_fee.refunded): vas_payments gets the
state `refunded`, with when, how much and why

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("vas_payments", sa.Column("refunded_fen", sa.BigInteger(), nullable=True))
    op.add_column("vas_payments", sa.Column("refund_reason", sa.String(200), nullable=True))
    op.add_column("vas_payments", sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint(op.f("ck_vas_payments_status"), "vas_payments", type_="check")
    op.create_check_constraint(
        op.f("ck_vas_payments_status"), "vas_payments", "status IN ('paid', 'failed', 'refunded')"
    )
    op.create_check_constraint(
        op.f("ck_vas_payments_refund_complete"),
        "vas_payments",
        "(status = 'refunded') = (refunded_at IS NOT NULL AND refunded_fen IS NOT NULL)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_vas_payments_refund_complete"), "vas_payments", type_="check")
    op.drop_constraint(op.f("ck_vas_payments_status"), "vas_payments", type_="check")
    op.execute("UPDATE vas_payments SET status = 'paid' WHERE status = 'refunded'")
    op.create_check_constraint(op.f("ck_vas_payments_status"), "vas_payments", "status IN ('paid', 'failed')")
    op.drop_column("vas_payments", "refunded_at")
    op.drop_column("vas_payments", "refund_reason")
    op.drop_column("vas_payments", "refunded_fen")
