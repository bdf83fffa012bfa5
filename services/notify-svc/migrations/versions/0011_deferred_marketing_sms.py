"""marketing SMS held until the recipient's quiet hours end

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("sms_deferred", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "deferred_sms",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("text", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.CheckConstraint("outcome IN ('sent', 'no_consent')", name=op.f("ck_deferred_sms_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deferred_sms")),
    )
    op.create_index("ix_deferred_sms_due", "deferred_sms", ["due_at"], postgresql_where=sa.text("done_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_deferred_sms_due", table_name="deferred_sms", postgresql_where=sa.text("done_at IS NULL"))
    op.drop_table("deferred_sms")
    op.drop_column("campaigns", "sms_deferred")
