"""The start cabinet's division on the rental (device-svc's eject carries it), for finance's revenue by region

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rentals", sa.Column("region_code", sa.String(6), nullable=True))


def downgrade() -> None:
    op.drop_column("rentals", "region_code")
