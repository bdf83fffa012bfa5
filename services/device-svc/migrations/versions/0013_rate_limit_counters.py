"""Request rate limit counters (kit.ratelimit, issue 15): sliding-window counts per rate class and subject or
address, in an UNLOGGED table (no WAL; the counts are worthless after a crash), shared by every replica.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from kit.migrations import add_rate_limit_table, drop_rate_limit_table

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_rate_limit_table()


def downgrade() -> None:
    drop_rate_limit_table()
