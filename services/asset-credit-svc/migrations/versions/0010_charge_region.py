"""The start cabinet's division on the charge (billing's ChargeRequested carries it), for revenue by region

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("charges", sa.Column("region_code", sa.String(6), nullable=True))


def downgrade() -> None:
    op.drop_column("charges", "region_code")
