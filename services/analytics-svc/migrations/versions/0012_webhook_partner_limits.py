"""per-partner webhook rate limits: one token bucket per partner, shared by its subscriptions

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_partner_limits",
        sa.Column("partner", sa.String(length=100), nullable=False),
        sa.Column("per_minute", sa.Integer(), nullable=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("per_minute IS NULL OR per_minute > 0", name=op.f("ck_webhook_partner_limits_per_minute")),
        sa.PrimaryKeyConstraint("partner", name=op.f("pk_webhook_partner_limits")),
    )


def downgrade() -> None:
    op.drop_table("webhook_partner_limits")
