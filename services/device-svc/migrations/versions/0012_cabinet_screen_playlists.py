"""the cabinet screens' ad playlist from notify-svc, and what each cabinet was sent

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
    op.create_table(
        "ad_playlists",
        sa.Column("slot", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("items", postgresql.JSONB(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_ad_playlists")),
    )
    op.create_table(
        "cabinet_playlists",
        sa.Column("cabinet_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cabinet_id"], ["cabinets.id"], name=op.f("fk_cabinet_playlists_cabinet_id_cabinets")),
        sa.PrimaryKeyConstraint("cabinet_id", name=op.f("pk_cabinet_playlists")),
    )


def downgrade() -> None:
    op.drop_table("cabinet_playlists")
    op.drop_table("ad_playlists")
