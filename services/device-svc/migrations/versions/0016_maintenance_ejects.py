"""Ejects for maintenance (issue 16): staff eject a bank from its slot to take it away for service. The
command is an ordinary eject towards the cabinet, so it lives in `commands` with no rental: its reason
and the staff member who asked are kept until the cabinet answers.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("commands", "rental_id", nullable=True)
    op.add_column("commands", sa.Column("maintenance_reason", sa.String(200), nullable=True))
    op.add_column("commands", sa.Column("requested_by", sa.String(64), nullable=True))
    op.create_check_constraint(
        op.f("ck_commands_rental_or_maintenance"), "commands", "(rental_id IS NULL) = (maintenance_reason IS NOT NULL)"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_commands_rental_or_maintenance"), "commands")
    op.execute("DELETE FROM commands WHERE rental_id IS NULL")
    op.drop_column("commands", "requested_by")
    op.drop_column("commands", "maintenance_reason")
    op.alter_column("commands", "rental_id", nullable=False)
