"""Cabinet screens' play counts (device.ad_plays.reported): one row per report and ad, keyed so that a replayed
report counts once

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ad_screen_plays",
        sa.Column("cabinet_id", sa.String(64), nullable=False),
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("ad_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("plays", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("plays > 0", name=op.f("ck_ad_screen_plays_plays")),
        sa.ForeignKeyConstraint(["ad_id"], ["ads.id"], name=op.f("fk_ad_screen_plays_ad_id_ads")),
        sa.PrimaryKeyConstraint("cabinet_id", "report_id", "ad_id", name=op.f("pk_ad_screen_plays")),
    )
    op.create_index("ix_ad_screen_plays_ad_id", "ad_screen_plays", ["ad_id"])


def downgrade() -> None:
    op.drop_index("ix_ad_screen_plays_ad_id", table_name="ad_screen_plays")
    op.drop_table("ad_screen_plays")
