"""The night light: a per-cabinet mode (auto by sunset and sunrise, or an operator's on / off), when the
scheduled light runs out, and users' light requests (their per-user limit).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cabinets", sa.Column("night_light", sa.String(length=10), server_default="auto", nullable=False))
    op.add_column("cabinets", sa.Column("light_on_until", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(op.f("ck_cabinets_night_light"), "cabinets", "night_light IN ('auto', 'on', 'off')")
    op.create_table(
        "user_light_requests",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_light_requests")),
    )
    op.create_index("ix_user_light_requests_user_at", "user_light_requests", ["user_id", "requested_at"])


def downgrade() -> None:
    op.drop_index("ix_user_light_requests_user_at", table_name="user_light_requests")
    op.drop_table("user_light_requests")
    op.drop_constraint(op.f("ck_cabinets_night_light"), "cabinets", type_="check")
    op.drop_column("cabinets", "light_on_until")
    op.drop_column("cabinets", "night_light")
