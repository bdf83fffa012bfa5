"""Users' fault reports about banks (notify-svc's tickets): a bank with an open report is not lent
until staff clear it.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("banks", sa.Column("reported_fault_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "bank_fault_reports",
        sa.Column("ticket_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleared_by", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_bank_fault_reports")),
    )
    op.create_index(
        "ix_bank_fault_reports_open",
        "bank_fault_reports",
        ["bank_id"],
        unique=False,
        postgresql_where=sa.text("cleared_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_bank_fault_reports_open", table_name="bank_fault_reports")
    op.drop_table("bank_fault_reports")
    op.drop_column("banks", "reported_fault_at")
