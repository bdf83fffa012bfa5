"""Protocol adapters: each cabinet's protocol (`native`, the platform's own, or a maker's, e.g. `volinks`).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cabinets", sa.Column("protocol", sa.String(length=20), server_default="native", nullable=False))
    op.create_check_constraint(op.f("ck_cabinets_protocol"), "cabinets", "protocol IN ('native', 'volinks')")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_cabinets_protocol"), "cabinets", type_="check")
    op.drop_column("cabinets", "protocol")
