"""Staff account lifecycle: forced password change, TOTP second factor (encrypted secrets), sign-ins
kept as admin_sessions so they can be listed and revoked (issue 15)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "admins", sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
    )
    op.add_column("admins", sa.Column("must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("admins", sa.Column("totp_secret", sa.Text(), nullable=True))
    op.add_column("admins", sa.Column("totp_pending", sa.Text(), nullable=True))
    op.add_column("admins", sa.Column("totp_enabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("admins", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    op.add_column("admins", sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "admin_sessions",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("admin_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_sessions"),
        sa.UniqueConstraint("token_id", name="uq_admin_sessions_token_id"),
    )
    op.create_index("ix_admin_sessions_admin", "admin_sessions", ["admin_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_admin", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    for column in (
        "last_login_at",
        "totp_last_step",
        "totp_enabled_at",
        "totp_pending",
        "totp_secret",
        "must_change_password",
        "updated_at",
    ):
        op.drop_column("admins", column)
