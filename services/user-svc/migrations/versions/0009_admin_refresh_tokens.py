"""Staff sessions are refreshed: each keeps the hash of its current refresh token (and of the one it
replaced, to catch a stolen token used twice), the refresh token's expiry, the session's hard end and
the access token it replaced (denied with the session when it is revoked).

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("admin_sessions", sa.Column("refresh_hash", sa.String(64), nullable=True))
    op.add_column("admin_sessions", sa.Column("previous_refresh_hash", sa.String(64), nullable=True))
    op.add_column("admin_sessions", sa.Column("refresh_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("admin_sessions", sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("admin_sessions", sa.Column("previous_token_id", sa.String(64), nullable=True))
    op.create_index("ix_admin_sessions_refresh", "admin_sessions", ["refresh_hash"], unique=True)
    op.create_index("ix_admin_sessions_previous_refresh", "admin_sessions", ["previous_refresh_hash"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_previous_refresh", "admin_sessions")
    op.drop_index("ix_admin_sessions_refresh", "admin_sessions")
    for column in ("previous_token_id", "ends_at", "refresh_expires_at", "previous_refresh_hash", "refresh_hash"):
        op.drop_column("admin_sessions", column)
