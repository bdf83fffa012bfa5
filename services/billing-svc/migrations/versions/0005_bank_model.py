"""the rented bank's model, as device-svc reported it at the eject (rental history shows it)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rentals", sa.Column("bank_model", sa.String(50), nullable=True))


def downgrade() -> None:
    op.drop_column("rentals", "bank_model")
