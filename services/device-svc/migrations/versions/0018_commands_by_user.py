"""Commands found by their renter whatever their status (issue 15): a deregistered user's ejects stop naming
them in one indexed update. Replaces the index of succeeded ones only; the rented-bank query still uses it.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_commands_user_id", "commands", ["user_id"], postgresql_where=sa.text("user_id IS NOT NULL"))
    op.drop_index("ix_commands_user_succeeded", table_name="commands")


def downgrade() -> None:
    op.create_index(
        "ix_commands_user_succeeded", "commands", ["user_id"], postgresql_where=sa.text("status = 'succeeded'")
    )
    op.drop_index("ix_commands_user_id", table_name="commands")
