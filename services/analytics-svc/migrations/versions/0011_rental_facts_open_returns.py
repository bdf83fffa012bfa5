"""A return looks for the rental it ended by bank among the facts whose return region is still unknown:
a partial index on bank_id keeps that lookup off a scan of every rental fact (issue 11's ingest rate).

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
    op.create_index(
        "ix_rental_facts_unplaced_return",
        "rental_facts",
        ["bank_id"],
        postgresql_where=sa.text("return_division IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_rental_facts_unplaced_return", table_name="rental_facts")
