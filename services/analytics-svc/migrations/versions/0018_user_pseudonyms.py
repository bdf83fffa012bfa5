"""erasure (issue 15): when a deregistered user's facts were given a pseudonym (analytics_svc/erasure.py),
and the index the job finds the ones due through

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
    op.add_column("user_facts", sa.Column("pseudonymised_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_user_facts_erasure_due",
        "user_facts",
        ["deregistered_at"],
        postgresql_where=sa.text("deregistered_at IS NOT NULL AND pseudonymised_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_user_facts_erasure_due", table_name="user_facts")
    op.drop_column("user_facts", "pseudonymised_at")
