"""Priced value-added services: asset-credit's answer per consent (vas_payments), and why the platform recorded
a consent itself (consent_records.reason: `payment_failed`)

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("consent_records", sa.Column("reason", sa.String(40), nullable=True))
    op.create_table(
        "vas_payments",
        sa.Column("consent_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('paid', 'failed')", name=op.f("ck_vas_payments_status")),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consent_records.id"], name=op.f("fk_vas_payments_consent_id_consent_records")
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_vas_payments")),
    )


def downgrade() -> None:
    op.drop_table("vas_payments")
    op.drop_column("consent_records", "reason")
