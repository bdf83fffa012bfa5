"""supervision access log

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "supervision_access_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("query", sa.String(length=500), nullable=False),
        sa.Column("regions", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supervision_access_log")),
    )
    op.create_index("ix_supervision_access_log_at", "supervision_access_log", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_supervision_access_log_at", table_name="supervision_access_log")
    op.drop_table("supervision_access_log")
