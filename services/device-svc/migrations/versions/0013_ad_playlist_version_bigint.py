"""notify-svc's playlist versions are the clock in ms: ad_playlists.version is a bigint

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("ad_playlists", "version", type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    op.alter_column("ad_playlists", "version", type_=sa.Integer(), existing_nullable=False)
