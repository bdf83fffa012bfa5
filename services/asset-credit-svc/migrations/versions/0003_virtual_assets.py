"""virtual assets (coupons, red packets, cards) and their history; how a charge was covered;
rentals whose debt support waived

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_check_constraint(
        op.f("ck_accounts_user_red_packet"),
        "accounts",
        "kind <> 'user_red_packet' OR (user_id IS NOT NULL AND NOT allow_negative)",
    )
    op.add_column("charges", sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("charges", sa.Column("duration_seconds", sa.Integer(), nullable=True))
    for column in ("card_fen", "coupon_fen", "red_packet_fen"):
        op.add_column("charges", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False))

    op.create_table(
        "asset_templates",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("amount_off_fen", sa.BigInteger(), nullable=True),
        sa.Column("percent_off", sa.Integer(), nullable=True),
        sa.Column("max_discount_fen", sa.BigInteger(), nullable=True),
        sa.Column("min_spend_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("card_minutes", sa.Integer(), nullable=True),
        sa.Column("price_fen", sa.BigInteger(), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('coupon', 'red_packet', 'card')", name=op.f("ck_asset_templates_kind")),
        sa.CheckConstraint(
            "kind <> 'coupon' OR ((amount_off_fen > 0) <> (percent_off IS NOT NULL))",
            name=op.f("ck_asset_templates_coupon_one_discount"),
        ),
        sa.CheckConstraint(
            "percent_off IS NULL OR percent_off BETWEEN 1 AND 100", name=op.f("ck_asset_templates_percent_range")
        ),
        sa.CheckConstraint("kind <> 'red_packet' OR amount_fen > 0", name=op.f("ck_asset_templates_red_packet_amount")),
        sa.CheckConstraint("kind <> 'card' OR card_minutes > 0", name=op.f("ck_asset_templates_card_minutes")),
        sa.CheckConstraint(
            "valid_days IS NOT NULL OR valid_until IS NOT NULL", name=op.f("ck_asset_templates_has_validity")
        ),
        sa.CheckConstraint("min_spend_fen >= 0", name=op.f("ck_asset_templates_min_spend_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_templates")),
    )
    op.create_table(
        "user_assets",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("template_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("issue_key", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("issued_by", sa.String(length=200), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("remaining_fen", sa.BigInteger(), nullable=True),
        sa.Column("minutes_remaining", sa.Integer(), nullable=True),
        sa.Column("used_rental_id", sa.UUID(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('coupon', 'red_packet', 'card')", name=op.f("ck_user_assets_kind")),
        sa.CheckConstraint("status IN ('available', 'used', 'expired', 'revoked')", name=op.f("ck_user_assets_status")),
        sa.CheckConstraint(
            "remaining_fen IS NULL OR remaining_fen >= 0", name=op.f("ck_user_assets_remaining_not_negative")
        ),
        sa.CheckConstraint(
            "minutes_remaining IS NULL OR minutes_remaining >= 0", name=op.f("ck_user_assets_minutes_not_negative")
        ),
        sa.CheckConstraint(
            "kind <> 'coupon' OR status <> 'used' OR used_rental_id IS NOT NULL",
            name=op.f("ck_user_assets_coupon_used_on"),
        ),
        sa.ForeignKeyConstraint(
            ["template_id"], ["asset_templates.id"], name=op.f("fk_user_assets_template_id_asset_templates")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_assets")),
        sa.UniqueConstraint("template_id", "user_id", "issue_key", name=op.f("uq_user_assets_template_user_key")),
    )
    op.create_index(
        "uq_user_assets_coupon_rental",
        "user_assets",
        ["used_rental_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'coupon' AND status = 'used'"),
    )
    op.create_index("ix_user_assets_user_status", "user_assets", ["user_id", "status"], unique=False)
    op.create_index(
        "ix_user_assets_expiring",
        "user_assets",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'available'"),
    )
    op.create_table(
        "asset_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("asset_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("minutes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rental_id", sa.UUID(), nullable=True),
        sa.Column("charge_id", sa.UUID(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "action IN ('issued', 'applied', 'expired', 'revoked')", name=op.f("ck_asset_history_action")
        ),
        sa.ForeignKeyConstraint(["asset_id"], ["user_assets.id"], name=op.f("fk_asset_history_asset_id_user_assets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_history")),
    )
    op.create_index(
        "uq_asset_history_coupon_applied",
        "asset_history",
        ["asset_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'coupon' AND action = 'applied'"),
    )
    op.create_index(
        "uq_asset_history_applied_charge",
        "asset_history",
        ["asset_id", "charge_id"],
        unique=True,
        postgresql_where=sa.text("action = 'applied'"),
    )
    op.create_index("ix_asset_history_user", "asset_history", ["user_id", "id"], unique=False)
    op.execute(
        "CREATE TRIGGER asset_history_append_only BEFORE UPDATE OR DELETE ON asset_history "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.create_table(
        "waived_rentals",
        sa.Column("rental_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("waived_fen", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rental_id", name=op.f("pk_waived_rentals")),
    )
    op.create_index(op.f("ix_waived_rentals_user_id"), "waived_rentals", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_waived_rentals_user_id"), table_name="waived_rentals")
    op.drop_table("waived_rentals")
    op.execute("DROP TRIGGER asset_history_append_only ON asset_history")
    op.drop_table("asset_history")
    op.drop_table("user_assets")
    op.drop_table("asset_templates")
    for column in ("red_packet_fen", "coupon_fen", "card_fen", "duration_seconds", "ended_at"):
        op.drop_column("charges", column)
    op.drop_constraint(op.f("ck_accounts_user_red_packet"), "accounts", type_="check")
