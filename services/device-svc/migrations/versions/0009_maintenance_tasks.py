"""Maintenance tasks for field staff with a lifecycle (open, assigned, in progress, done, cancelled) and
their history; at most one open task per device and cause.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "maintenance_tasks",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("device_kind", sa.String(length=10), nullable=False),
        sa.Column("cause", sa.String(length=30), nullable=False),
        sa.Column("detail", sa.String(length=200), server_default="", nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="open", nullable=False),
        sa.Column("assignee", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'assigned', 'in_progress', 'done', 'cancelled')",
            name=op.f("ck_maintenance_tasks_status"),
        ),
        sa.CheckConstraint("device_kind IN ('cabinet', 'bank')", name=op.f("ck_maintenance_tasks_device_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_tasks")),
    )
    op.create_index(
        "uq_maintenance_tasks_open",
        "maintenance_tasks",
        ["device_id", "cause"],
        unique=True,
        postgresql_where=sa.text("status IN ('open', 'assigned', 'in_progress')"),
    )
    op.create_index("ix_maintenance_tasks_status_opened_at", "maintenance_tasks", ["status", "opened_at"])
    op.create_index("ix_maintenance_tasks_device_cause", "maintenance_tasks", ["device_id", "cause", "closed_at"])
    op.create_table(
        "maintenance_task_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("task_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("by", sa.String(length=100), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["maintenance_tasks.id"], name=op.f("fk_maintenance_task_history_task_id_maintenance_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_task_history")),
    )
    op.create_index("ix_maintenance_task_history_task_id", "maintenance_task_history", ["task_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_maintenance_task_history_task_id", table_name="maintenance_task_history")
    op.drop_table("maintenance_task_history")
    op.drop_index("ix_maintenance_tasks_device_cause", table_name="maintenance_tasks")
    op.drop_index("ix_maintenance_tasks_status_opened_at", table_name="maintenance_tasks")
    op.drop_index("uq_maintenance_tasks_open", table_name="maintenance_tasks")
    op.drop_table("maintenance_tasks")
