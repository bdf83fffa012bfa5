"""The bank during a rental (6.1.9): eject commands keep their renter, and users' consent to see the
position of the bank they rent.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.create_index(
        "ix_commands_user_succeeded",
        "commands",
        ["user_id"],
        postgresql_where=sa.text("status = 'succeeded'"),
    )
    op.create_table(
        "position_consents",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_position_consents")),
    )


def downgrade() -> None:
    op.drop_table("position_consents")
    op.drop_index("ix_commands_user_succeeded", table_name="commands")
    op.drop_column("commands", "user_id")
