"""Firmware updates (issue 13): cabinets' model; images (bytes, SHA-256, Ed25519 signature); rollouts and each
cabinet's update in them (states moved only through device_svc/firmware/lifecycle.py).

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPDATE_STATES = (
    "'pending', 'sent', 'downloading', 'verified', 'installing', 'rebooting', 'done', 'failed', "
    "'rolled_back', 'cancelled'"
)


def upgrade() -> None:
    op.add_column("cabinets", sa.Column("model", sa.String(50), server_default="CAB-STD", nullable=False))
    op.create_table(
        "firmware_images",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("model", sa.String(50), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("notes", sa.String(500), server_default="", nullable=False),
        sa.Column("uploaded_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware_images")),
    )
    op.create_index("uq_firmware_images_model_version", "firmware_images", ["model", "version"], unique=True)
    op.create_table(
        "firmware_rollouts",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("image_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("model", sa.String(50), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("target_percent", sa.SmallInteger(), nullable=False),
        sa.Column("target_region", sa.String(6), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("max_failures", sa.Integer(), nullable=True),
        sa.Column("max_failure_pct", sa.SmallInteger(), nullable=True),
        sa.Column("reason", sa.String(300), server_default="", nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('running', 'paused', 'halted', 'completed', 'cancelled')",
            name=op.f("ck_firmware_rollouts_state"),
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["firmware_images.id"], name=op.f("fk_firmware_rollouts_image_id_firmware_images")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware_rollouts")),
    )
    op.create_index("ix_firmware_rollouts_state", "firmware_rollouts", ["state"])
    op.create_table(
        "firmware_updates",
        sa.Column("rollout_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("cabinet_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("cmd_id", sa.String(64), nullable=True),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("progress_pct", sa.SmallInteger(), nullable=True),
        sa.Column("error", sa.String(64), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"state IN ({UPDATE_STATES})", name=op.f("ck_firmware_updates_state")),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["firmware_rollouts.id"], name=op.f("fk_firmware_updates_rollout_id_firmware_rollouts")
        ),
        sa.ForeignKeyConstraint(["cabinet_id"], ["cabinets.id"], name=op.f("fk_firmware_updates_cabinet_id_cabinets")),
        sa.PrimaryKeyConstraint("rollout_id", "cabinet_id", name=op.f("pk_firmware_updates")),
    )
    op.create_index("ix_firmware_updates_rollout_state", "firmware_updates", ["rollout_id", "state", "seq"])
    op.create_index(
        "uq_firmware_updates_cmd_id",
        "firmware_updates",
        ["cmd_id"],
        unique=True,
        postgresql_where=sa.text("cmd_id IS NOT NULL"),
    )
    op.create_index(
        "uq_firmware_updates_cabinet_active",
        "firmware_updates",
        ["cabinet_id"],
        unique=True,
        postgresql_where=sa.text("state IN ('sent', 'downloading', 'verified', 'installing', 'rebooting')"),
    )


def downgrade() -> None:
    op.drop_table("firmware_updates")
    op.drop_table("firmware_rollouts")
    op.drop_table("firmware_images")
    op.drop_column("cabinets", "model")
