"""bank facts as independent registers, so their result does not depend on the order events arrive in: the
state (with `state_at`) and the place (cabinet, division, cell, with the new `place_at`), the charge cycles (the new
`cycles_at`) and the health (`health_at`) each keep their newest value; a bank known only from its own module's readings or from an alarm has no state or no place yet
(both nullable)

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
    op.add_column("bank_facts", sa.Column("place_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bank_facts", sa.Column("cycles_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE bank_facts SET cycles_at = health_at WHERE charge_cycles IS NOT NULL")
    op.execute("UPDATE bank_facts SET place_at = state_at WHERE cabinet_id IS NOT NULL OR division IS NOT NULL")
    op.alter_column("bank_facts", "state", nullable=True)
    op.alter_column("bank_facts", "state_at", nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM bank_facts WHERE state IS NULL OR state_at IS NULL")
    op.alter_column("bank_facts", "state_at", nullable=False)
    op.alter_column("bank_facts", "state", nullable=False)
    op.drop_column("bank_facts", "cycles_at")
    op.drop_column("bank_facts", "place_at")
