"""bank positions for the supervision feed's /telemetry: each bank module reading with a position, kept as
its H3 cell and division (never the exact point), with the battery

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bank_position_facts",
        sa.Column("bank_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cell", sa.String(16), nullable=False),
        sa.Column("division", sa.String(6), nullable=True),
        sa.Column("battery_pct", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("bank_id", "at", name=op.f("pk_bank_position_facts")),
    )
    op.create_index("ix_bank_position_facts_at", "bank_position_facts", ["at"])


def downgrade() -> None:
    op.drop_index("ix_bank_position_facts_at", table_name="bank_position_facts")
    op.drop_table("bank_position_facts")
