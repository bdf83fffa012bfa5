"""hotspots: cabinet supply (rentable banks, slots), scans refused for lack of a bank, hotspot alerts

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cabinet_regions", sa.Column("banks_rentable", sa.Integer(), nullable=True))
    op.add_column("cabinet_regions", sa.Column("slot_count", sa.Integer(), nullable=True))
    op.create_table(
        "refusal_facts",
        sa.Column("command_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_refusal_facts")),
    )
    op.create_index("ix_refusal_facts_at", "refusal_facts", ["at"])
    op.create_table(
        "hotspot_alerts",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("cell", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("division", sa.String(length=6), nullable=True),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("borrows", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("banks_available", sa.Integer(), nullable=False),
        sa.Column("free_slots", sa.Integer(), nullable=False),
        sa.Column("moves", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hotspot_alerts")),
    )
    op.create_index(
        "uq_hotspot_alerts_open",
        "hotspot_alerts",
        ["cell", "kind"],
        unique=True,
        postgresql_where=sa.text("cleared_at IS NULL"),
    )
    op.create_index("ix_hotspot_alerts_raised_at", "hotspot_alerts", ["raised_at"])


def downgrade() -> None:
    op.drop_index("ix_hotspot_alerts_raised_at", table_name="hotspot_alerts")
    op.drop_index("uq_hotspot_alerts_open", table_name="hotspot_alerts")
    op.drop_table("hotspot_alerts")
    op.drop_index("ix_refusal_facts_at", table_name="refusal_facts")
    op.drop_table("refusal_facts")
    op.drop_column("cabinet_regions", "slot_count")
    op.drop_column("cabinet_regions", "banks_rentable")
