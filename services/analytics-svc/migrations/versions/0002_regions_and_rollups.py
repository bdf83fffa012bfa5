"""regions on facts, cabinet regions and stock, bank states, active user days, hourly rental rollup

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("user_facts", "registered_at", nullable=True)
    op.add_column("user_facts", sa.Column("first_rental_at", sa.DateTime(timezone=True), nullable=True))
    for column in ("start_division", "return_division"):
        op.add_column("rental_facts", sa.Column(column, sa.String(length=6), nullable=True))
    for column in ("start_cell", "return_cell"):
        op.add_column("rental_facts", sa.Column(column, sa.String(length=16), nullable=True))
    op.add_column("rental_facts", sa.Column("purchased", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("return_facts", sa.Column("division", sa.String(length=6), nullable=True))
    op.add_column("return_facts", sa.Column("cell", sa.String(length=16), nullable=True))
    op.create_table(
        "cabinet_regions",
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("division", sa.String(length=6), nullable=True),
        sa.Column("cell", sa.String(length=16), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("banks_present", sa.Integer(), nullable=True),
        sa.Column("stock_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("cabinet_id", name=op.f("pk_cabinet_regions")),
    )
    op.create_table(
        "bank_facts",
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=True),
        sa.Column("division", sa.String(length=6), nullable=True),
        sa.Column("cell", sa.String(length=16), nullable=True),
        sa.Column("state_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=50), nullable=True),
        sa.PrimaryKeyConstraint("bank_id", name=op.f("pk_bank_facts")),
    )
    op.create_index("ix_bank_facts_division", "bank_facts", ["division"], unique=False)
    op.create_table(
        "user_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("division", sa.String(length=6), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("day", "user_id", "division", name=op.f("pk_user_days")),
    )
    op.create_table(
        "rental_rollup_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_division", sa.String(length=6), nullable=False),
        sa.Column("start_cell", sa.String(length=16), nullable=False),
        sa.Column("return_division", sa.String(length=6), nullable=False),
        sa.Column("rentals", sa.Integer(), nullable=False),
        sa.Column("returned", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hour", "start_division", "start_cell", "return_division", name=op.f("pk_rental_rollup_hourly")
        ),
    )
    op.create_table(
        "rollup_dirty_hours",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_rollup_dirty_hours")),
    )
    # Every hour that already has facts is built once by the refresh job.
    op.execute("INSERT INTO rollup_dirty_hours (hour) SELECT DISTINCT date_trunc('hour', started_at) FROM rental_facts")


def downgrade() -> None:
    op.drop_table("rollup_dirty_hours")
    op.drop_table("rental_rollup_hourly")
    op.drop_table("user_days")
    op.drop_index("ix_bank_facts_division", table_name="bank_facts")
    op.drop_table("bank_facts")
    op.drop_table("cabinet_regions")
    op.drop_column("return_facts", "cell")
    op.drop_column("return_facts", "division")
    for column in ("purchased", "return_cell", "start_cell", "return_division", "start_division"):
        op.drop_column("rental_facts", column)
    op.drop_column("user_facts", "first_rental_at")
    op.execute("DELETE FROM user_facts WHERE registered_at IS NULL")
    op.alter_column("user_facts", "registered_at", nullable=False)
