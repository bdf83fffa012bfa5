"""compensation: unmatched returns, late-eject revival, manual payment attempts, disputes, corrections

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rentals", sa.Column("charge_attempt", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("rentals", sa.Column("revived_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("rentals", sa.Column("purchase_ceiling_fen", sa.Integer(), nullable=True))
    op.add_column("rentals", sa.Column("plan_id", sa.UUID(), nullable=True))
    op.add_column("rentals", sa.Column("purchased", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.create_table(
        "pricing_plans",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("scope_value", sa.String(length=128), server_default="", nullable=False),
        sa.Column("period_minutes", sa.Integer(), nullable=False),
        sa.Column("price_per_period_fen", sa.Integer(), nullable=False),
        sa.Column("free_minutes", sa.Integer(), nullable=False),
        sa.Column("daily_cap_fen", sa.Integer(), nullable=False),
        sa.Column("purchase_ceiling_fen", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("scope IN ('default', 'region', 'cabinet')", name=op.f("ck_pricing_plans_scope")),
        sa.CheckConstraint(
            "period_minutes > 0 AND price_per_period_fen >= 0 AND free_minutes >= 0 AND daily_cap_fen >= 0",
            name=op.f("ck_pricing_plans_price_valid"),
        ),
        sa.CheckConstraint(
            "purchase_ceiling_fen IS NULL OR purchase_ceiling_fen > 0", name=op.f("ck_pricing_plans_ceiling_positive")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pricing_plans")),
    )
    op.create_index(
        "uq_pricing_plans_active_scope",
        "pricing_plans",
        ["scope", "scope_value"],
        unique=True,
        postgresql_where=sa.text("active"),
    )
    op.create_index(
        "ix_rentals_user_unpaid", "rentals", ["user_id"], unique=False, postgresql_where=sa.text("state = 'unpaid'")
    )
    op.create_table(
        "unmatched_returns",
        sa.Column("report_id", sa.String(length=200), nullable=False),
        sa.Column("bank_id", sa.String(length=128), nullable=False),
        sa.Column("cabinet_id", sa.String(length=128), nullable=False),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rental_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["rental_id"], ["rentals.id"], name=op.f("fk_unmatched_returns_rental_id_rentals")),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_unmatched_returns")),
    )
    op.create_index(
        "ix_unmatched_returns_open",
        "unmatched_returns",
        ["bank_id", "received_at"],
        unique=False,
        postgresql_where=sa.text("rental_id IS NULL"),
    )
    op.create_table(
        "disputes",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("rental_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('open', 'resolved', 'rejected')", name=op.f("ck_disputes_state")),
        sa.ForeignKeyConstraint(["rental_id"], ["rentals.id"], name=op.f("fk_disputes_rental_id_rentals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
    )
    op.create_index(
        "uq_disputes_rental_open", "disputes", ["rental_id"], unique=True, postgresql_where=sa.text("state = 'open'")
    )
    op.create_index("ix_disputes_state_created", "disputes", ["state", "created_at"], unique=False)
    op.create_table(
        "rental_corrections",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("rental_id", sa.UUID(), nullable=False),
        sa.Column("dispute_id", sa.UUID(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("actor_roles", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("refund_fen", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("refund_id", sa.UUID(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("refund_fen >= 0", name=op.f("ck_rental_corrections_refund_not_negative")),
        sa.ForeignKeyConstraint(
            ["dispute_id"], ["disputes.id"], name=op.f("fk_rental_corrections_dispute_id_disputes")
        ),
        sa.ForeignKeyConstraint(["rental_id"], ["rentals.id"], name=op.f("fk_rental_corrections_rental_id_rentals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rental_corrections")),
        sa.UniqueConstraint("refund_id", name=op.f("uq_rental_corrections_refund_id")),
        sa.UniqueConstraint("actor", "idempotency_key", name=op.f("uq_rental_corrections_actor_idempotency_key")),
    )
    # The audit is append-only.
    op.execute(
        """
        CREATE FUNCTION rental_corrections_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'rental_corrections is append-only';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER rental_corrections_append_only BEFORE UPDATE OR DELETE ON rental_corrections "
        "FOR EACH ROW EXECUTE FUNCTION rental_corrections_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER rental_corrections_append_only ON rental_corrections")
    op.execute("DROP FUNCTION rental_corrections_append_only()")
    op.drop_table("rental_corrections")
    op.drop_index("ix_disputes_state_created", table_name="disputes")
    op.drop_index("uq_disputes_rental_open", table_name="disputes", postgresql_where=sa.text("state = 'open'"))
    op.drop_table("disputes")
    op.drop_index(
        "ix_unmatched_returns_open", table_name="unmatched_returns", postgresql_where=sa.text("rental_id IS NULL")
    )
    op.drop_table("unmatched_returns")
    op.drop_index("ix_rentals_user_unpaid", table_name="rentals", postgresql_where=sa.text("state = 'unpaid'"))
    op.drop_index("uq_pricing_plans_active_scope", table_name="pricing_plans", postgresql_where=sa.text("active"))
    op.drop_table("pricing_plans")
    op.drop_column("rentals", "purchased")
    op.drop_column("rentals", "plan_id")
    op.drop_column("rentals", "purchase_ceiling_fen")
    op.drop_column("rentals", "revived_at")
    op.drop_column("rentals", "charge_attempt")
