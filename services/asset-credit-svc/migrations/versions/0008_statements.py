"""The channels' daily statements and their reconciliation (statement_lines, statement_runs, statement_mismatches)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "statement_lines",
        sa.Column("channel", sa.String(30), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("number", sa.String(100), nullable=False),
        sa.Column("bill_date", sa.Date(), nullable=False),
        sa.Column("out_trade_no", sa.String(100), nullable=False),
        sa.Column("trade_no", sa.String(100), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("fee_fen", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('payment', 'refund')", name=op.f("ck_statement_lines_kind")),
        sa.PrimaryKeyConstraint("channel", "kind", "number", name=op.f("pk_statement_lines")),
    )
    op.create_index("ix_statement_lines_channel_date", "statement_lines", ["channel", "bill_date"])
    op.create_table(
        "statement_runs",
        sa.Column("channel", sa.String(30), nullable=False),
        sa.Column("bill_date", sa.Date(), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("statement_payments_fen", sa.BigInteger(), nullable=False),
        sa.Column("statement_refunds_fen", sa.BigInteger(), nullable=False),
        sa.Column("statement_fees_fen", sa.BigInteger(), nullable=False),
        sa.Column("our_payments_fen", sa.BigInteger(), nullable=False),
        sa.Column("our_refunds_fen", sa.BigInteger(), nullable=False),
        sa.Column("mismatches", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "bill_date", name=op.f("pk_statement_runs")),
    )
    op.create_table(
        "statement_mismatches",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("channel", sa.String(30), nullable=False),
        sa.Column("bill_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("number", sa.String(100), nullable=False),
        sa.Column("problem", sa.String(30), nullable=False),
        sa.Column("our_amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("our_status", sa.String(20), nullable=True),
        sa.Column("their_amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("trade_no", sa.String(100), nullable=True),
        sa.CheckConstraint("kind IN ('payment', 'refund')", name=op.f("ck_statement_mismatches_kind")),
        sa.CheckConstraint(
            "problem IN ('missing_on_our_side', 'missing_on_their_side', 'amount_differs')",
            name=op.f("ck_statement_mismatches_problem"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_mismatches")),
    )
    op.create_index("ix_statement_mismatches_channel_date", "statement_mismatches", ["channel", "bill_date"])


def downgrade() -> None:
    op.drop_table("statement_mismatches")
    op.drop_table("statement_runs")
    op.drop_table("statement_lines")
