"""user age bands: each user's birth year (from `user.user.registered`, never the date) and when they
deregistered, so the year is forgotten then and a registration arriving after the deregistration does not
bring it back

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("user_facts", sa.Column("birth_year", sa.SmallInteger(), nullable=True))
    op.add_column("user_facts", sa.Column("deregistered_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in ("deregistered_at", "birth_year"):
        op.drop_column("user_facts", column)
