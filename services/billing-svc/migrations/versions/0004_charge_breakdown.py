"""how a rental's fee was covered: card, coupon, red packets, and what the user paid

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("card_fen", "coupon_fen", "red_packet_fen")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("rentals", sa.Column(column, sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("rentals", sa.Column("paid_fen", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_rentals_breakdown_not_negative"),
        "rentals",
        "card_fen >= 0 AND coupon_fen >= 0 AND red_packet_fen >= 0 AND (paid_fen IS NULL OR paid_fen >= 0)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_rentals_breakdown_not_negative"), "rentals", type_="check")
    op.drop_column("rentals", "paid_fen")
    for column in COLUMNS:
        op.drop_column("rentals", column)
