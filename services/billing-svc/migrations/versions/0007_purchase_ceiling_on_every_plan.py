"""Every pricing plan has a purchase ceiling: plans without one get the default ¥99 (issue 12).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE pricing_plans SET purchase_ceiling_fen = 9900 WHERE purchase_ceiling_fen IS NULL")
    op.alter_column("pricing_plans", "purchase_ceiling_fen", nullable=False, server_default=sa.text("9900"))
    op.create_index(
        "ix_rentals_purchased_bank",
        "rentals",
        ["bank_id", "ended_at"],
        postgresql_where=sa.text("purchased"),
    )


def downgrade() -> None:
    op.drop_index("ix_rentals_purchased_bank", table_name="rentals")
    op.alter_column("pricing_plans", "purchase_ceiling_fen", nullable=True, server_default=None)
