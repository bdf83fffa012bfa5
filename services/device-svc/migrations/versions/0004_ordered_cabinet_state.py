"""Cabinet reports ordered by device time (the newest inventory and signal reading win, whichever
instance handles which), and banks held in a manual state by operations.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cabinets", sa.Column("inventory_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cabinets", sa.Column("rssi_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("banks", sa.Column("operator_hold", sa.Boolean(), server_default=sa.text("false"), nullable=False))


def downgrade() -> None:
    op.drop_column("banks", "operator_hold")
    op.drop_column("cabinets", "rssi_at")
    op.drop_column("cabinets", "inventory_at")
