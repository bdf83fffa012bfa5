"""Indexes the retention job walks (user_svc.retention, issue 15): each table's rows go oldest first by the
time its period counts from.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("verification_codes", "created_at"),
    ("dev_messages", "created_at"),
    ("login_failures", "window_started_at"),
    ("refresh_tokens", "expires_at"),
    ("revoked_access_tokens", "expires_at"),
    ("oauth_codes", "expires_at"),
    ("eligibility_decisions", "at"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
