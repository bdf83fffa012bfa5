"""value-added services get a kind, a provider, a price and retirement; ads with schedules, regions,
deduplicated impressions and clicks; the cabinet screens' playlist version

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Services defined before this revision were the platform's own add-ons.
    op.add_column("value_added_services", sa.Column("kind", sa.String(20), nullable=False, server_default="add_on"))
    op.add_column(
        "value_added_services", sa.Column("provider", sa.String(100), nullable=False, server_default="platform")
    )
    op.alter_column("value_added_services", "kind", server_default=None)
    op.alter_column("value_added_services", "provider", server_default=None)
    op.add_column("value_added_services", sa.Column("price_fen", sa.Integer(), nullable=True))
    op.add_column("value_added_services", sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_value_added_services_kind"),
        "value_added_services",
        "kind IN ('partner_offer', 'add_on', 'advertising')",
    )
    op.create_check_constraint(
        op.f("ck_value_added_services_price_fen"), "value_added_services", "price_fen IS NULL OR price_fen >= 0"
    )
    op.create_table(
        "ads",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("slot", sa.String(20), nullable=False),
        sa.Column("advertiser", sa.String(100), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("text", sa.String(200), nullable=False),
        sa.Column("media_url", sa.String(300), nullable=True),
        sa.Column("link_url", sa.String(300), nullable=True),
        sa.Column("display_s", sa.Integer(), nullable=False),
        sa.Column("regions", postgresql.JSONB(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by", sa.String(100), nullable=True),
        sa.CheckConstraint("slot IN ('app_banner', 'cabinet_screen')", name=op.f("ck_ads_slot")),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_ads_schedule")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ads")),
    )
    op.create_index("ix_ads_slot_ends", "ads", ["slot", "ends_at"])
    op.create_table(
        "ad_interactions",
        sa.Column("ad_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("viewer", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('impression', 'click')", name=op.f("ck_ad_interactions_kind")),
        sa.ForeignKeyConstraint(["ad_id"], ["ads.id"], name=op.f("fk_ad_interactions_ad_id_ads")),
        sa.PrimaryKeyConstraint("ad_id", "kind", "viewer", "day", name=op.f("pk_ad_interactions")),
    )
    op.create_table(
        "ad_playlist_state",
        sa.Column("slot", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_ad_playlist_state")),
    )


def downgrade() -> None:
    op.drop_table("ad_playlist_state")
    op.drop_table("ad_interactions")
    op.drop_index("ix_ads_slot_ends", table_name="ads")
    op.drop_table("ads")
    op.drop_constraint(op.f("ck_value_added_services_price_fen"), "value_added_services", type_="check")
    op.drop_constraint(op.f("ck_value_added_services_kind"), "value_added_services", type_="check")
    for column in ("retired_at", "price_fen", "provider", "kind"):
        op.drop_column("value_added_services", column)
