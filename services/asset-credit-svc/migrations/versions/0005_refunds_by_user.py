"""The user's money movements (GET /v1/wallet/movements) read refunds by user, newest first.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_refunds_user_created", "refunds", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_refunds_user_created", table_name="refunds")
