"""user credit: each user's newest credit level and whether they borrow without a deposit

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("user_facts", sa.Column("credit_level", sa.String(length=20), nullable=True))
    op.add_column("user_facts", sa.Column("deposit_free", sa.Boolean(), nullable=True))
    op.add_column("user_facts", sa.Column("credit_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in ("credit_at", "deposit_free", "credit_level"):
        op.drop_column("user_facts", column)
