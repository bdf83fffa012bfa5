"""bank attributes: time in service, charge cycles and battery health on bank facts

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bank_facts", sa.Column("in_service_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bank_facts", sa.Column("charge_cycles", sa.Integer(), nullable=True))
    op.add_column("bank_facts", sa.Column("health_pct", sa.Integer(), nullable=True))
    op.add_column("bank_facts", sa.Column("health_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in ("health_at", "health_pct", "charge_cycles", "in_service_at"):
        op.drop_column("bank_facts", column)
