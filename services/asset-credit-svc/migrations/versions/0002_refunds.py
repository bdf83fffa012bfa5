"""refunds; at most one settled charge per rental; charges paid through the user's provider;
deposits and the open rentals that keep them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_charges_status"), "charges", type_="check")
    op.create_check_constraint(
        op.f("ck_charges_status"), "charges", "status IN ('pending', 'awaiting_provider', 'settled', 'failed')"
    )
    op.add_column("charges", sa.Column("provider_channel", sa.String(length=30), nullable=True))
    op.add_column("charges", sa.Column("provider_amount_fen", sa.BigInteger(), nullable=True))
    op.add_column("charges", sa.Column("provider_trade_no", sa.String(length=100), nullable=True))
    op.add_column("charges", sa.Column("provider_requested_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("charges", sa.Column("provider_transaction_id", sa.UUID(), nullable=True))
    op.add_column("charges", sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key(
        op.f("fk_charges_provider_transaction_id_ledger_transactions"),
        "charges",
        "ledger_transactions",
        ["provider_transaction_id"],
        ["id"],
    )
    op.create_check_constraint(
        op.f("ck_charges_awaiting_provider_has_order"),
        "charges",
        "status <> 'awaiting_provider' OR (provider_channel IS NOT NULL AND provider_amount_fen > 0)",
    )
    op.create_index(
        "ix_charges_awaiting_provider",
        "charges",
        ["provider_requested_at"],
        unique=False,
        postgresql_where=sa.text("status = 'awaiting_provider'"),
    )
    op.create_table(
        "payment_methods",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.String(length=30), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("channel IN ('alipay', 'wechat')", name=op.f("ck_payment_methods_channel")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_payment_methods")),
    )
    op.create_index(
        "uq_charges_rental_settled",
        "charges",
        ["rental_id"],
        unique=True,
        postgresql_where=sa.text("status = 'settled'"),
    )
    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.UUID(), nullable=False),
        sa.Column("rental_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_reason", sa.String(length=100), nullable=True),
        sa.Column("transaction_id", sa.UUID(), nullable=True),
        sa.Column("source_event_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint("status IN ('pending', 'settled', 'failed')", name=op.f("ck_refunds_status")),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["ledger_transactions.id"], name=op.f("fk_refunds_transaction_id_ledger_transactions")
        ),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_refunds")),
    )
    op.create_index("ix_refunds_rental_id", "refunds", ["rental_id"], unique=False)
    op.create_table(
        "deposit_operations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("pay_id", sa.UUID(), nullable=True),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("provider_trade_no", sa.String(length=100), nullable=True),
        sa.Column("failure_reason", sa.String(length=100), nullable=True),
        sa.Column("transaction_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_deposit_operations_amount_positive")),
        sa.CheckConstraint("kind IN ('pay', 'refund')", name=op.f("ck_deposit_operations_kind")),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_deposit_operations_status")),
        sa.ForeignKeyConstraint(
            ["pay_id"], ["deposit_operations.id"], name=op.f("fk_deposit_operations_pay_id_deposit_operations")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_deposit_operations_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deposit_operations")),
        sa.UniqueConstraint("user_id", "idempotency_key", name=op.f("uq_deposit_operations_user_idempotency_key")),
    )
    op.create_index("ix_deposit_operations_user_created", "deposit_operations", ["user_id", "created_at"], unique=False)
    op.create_table(
        "open_rentals",
        sa.Column("rental_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("closed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("rental_id", name=op.f("pk_open_rentals")),
    )
    op.create_index(op.f("ix_open_rentals_user_id"), "open_rentals", ["user_id"], unique=False)
    op.create_table(
        "credit_scores",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 1000", name=op.f("ck_credit_scores_score_range")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_credit_scores")),
    )
    op.create_table(
        "credit_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("score_after", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=50), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_changes")),
        sa.UniqueConstraint("source_id", "reason", name=op.f("uq_credit_changes_source_reason")),
    )
    op.create_index("ix_credit_changes_user_id", "credit_changes", ["user_id", "id"], unique=False)
    op.execute(
        """
        CREATE FUNCTION credit_changes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'credit_changes is append-only';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER credit_changes_append_only BEFORE UPDATE OR DELETE ON credit_changes "
        "FOR EACH ROW EXECUTE FUNCTION credit_changes_append_only()"
    )
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_withdrawals_amount_positive")),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_withdrawals_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withdrawals")),
        sa.UniqueConstraint("user_id", "idempotency_key", name=op.f("uq_withdrawals_user_idempotency_key")),
    )
    op.create_table(
        "withdrawal_parts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("withdrawal_id", sa.UUID(), nullable=False),
        sa.Column("top_up_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.String(length=30), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_withdrawal_parts_amount_positive")),
        sa.CheckConstraint("status IN ('pending', 'succeeded')", name=op.f("ck_withdrawal_parts_status")),
        sa.ForeignKeyConstraint(["top_up_id"], ["top_ups.id"], name=op.f("fk_withdrawal_parts_top_up_id_top_ups")),
        sa.ForeignKeyConstraint(
            ["withdrawal_id"], ["withdrawals.id"], name=op.f("fk_withdrawal_parts_withdrawal_id_withdrawals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withdrawal_parts")),
    )
    op.create_index("ix_withdrawal_parts_top_up_id", "withdrawal_parts", ["top_up_id"], unique=False)
    op.create_index(
        "ix_withdrawal_parts_pending",
        "withdrawal_parts",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER credit_changes_append_only ON credit_changes")
    op.execute("DROP FUNCTION credit_changes_append_only()")
    op.drop_table("credit_changes")
    op.drop_table("credit_scores")
    op.drop_table("withdrawal_parts")
    op.drop_table("withdrawals")
    op.drop_index(op.f("ix_open_rentals_user_id"), table_name="open_rentals")
    op.drop_table("open_rentals")
    op.drop_index("ix_deposit_operations_user_created", table_name="deposit_operations")
    op.drop_table("deposit_operations")
    op.drop_table("payment_methods")
    op.drop_index(
        "ix_charges_awaiting_provider", table_name="charges", postgresql_where=sa.text("status = 'awaiting_provider'")
    )
    op.drop_constraint(op.f("ck_charges_awaiting_provider_has_order"), "charges", type_="check")
    op.drop_constraint(op.f("fk_charges_provider_transaction_id_ledger_transactions"), "charges", type_="foreignkey")
    for column in (
        "completed_at",
        "provider_transaction_id",
        "provider_requested_at",
        "provider_trade_no",
        "provider_amount_fen",
        "provider_channel",
    ):
        op.drop_column("charges", column)
    op.drop_constraint(op.f("ck_charges_status"), "charges", type_="check")
    op.create_check_constraint(op.f("ck_charges_status"), "charges", "status IN ('pending', 'settled', 'failed')")
    op.drop_index("ix_refunds_rental_id", table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("uq_charges_rental_settled", table_name="charges", postgresql_where=sa.text("status = 'settled'"))
