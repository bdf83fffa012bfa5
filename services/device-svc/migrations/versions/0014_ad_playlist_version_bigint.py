"""notify-svc's playlist versions are the clock in ms: ad_playlists.version is a bigint

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("ad_playlists", "version", type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    op.alter_column("ad_playlists", "version", type_=sa.Integer(), existing_nullable=False)
