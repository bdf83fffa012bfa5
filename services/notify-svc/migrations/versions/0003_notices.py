"""notices with images; per-user receipts (read, deleted) for notices shown in every inbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('system', 'operations')", name=op.f("ck_notices_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    op.create_index(
        "ix_notices_published",
        "notices",
        ["published_at", "id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_table(
        "notice_images",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("notice_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=50), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["notice_id"], ["notices.id"], name=op.f("fk_notice_images_notice_id_notices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_images")),
    )
    op.create_index("ix_notice_images_notice", "notice_images", ["notice_id", "position"], unique=False)
    op.create_table(
        "notice_receipts",
        sa.Column("notice_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["notice_id"], ["notices.id"], name=op.f("fk_notice_receipts_notice_id_notices")),
        sa.PrimaryKeyConstraint("notice_id", "user_id", name=op.f("pk_notice_receipts")),
    )


def downgrade() -> None:
    op.drop_table("notice_receipts")
    op.drop_index("ix_notice_images_notice", table_name="notice_images")
    op.drop_table("notice_images")
    op.drop_index("ix_notices_published", table_name="notices")
    op.drop_table("notices")
