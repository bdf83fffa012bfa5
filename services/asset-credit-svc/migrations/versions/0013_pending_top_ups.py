"""Top-ups still pending, by age: the stale top-up sweeper asks the providers about the oldest every few
seconds (issue 14); a partial index keeps that read small however many top-ups have ended.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_top_ups_pending_created_at ON top_ups (created_at) WHERE status = 'pending'")


def downgrade() -> None:
    op.execute("DROP INDEX ix_top_ups_pending_created_at")
