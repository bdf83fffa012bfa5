"""The platform's audit trail (every staff action of every service, from audit.staff.v1): append-only
(a trigger refuses UPDATE and DELETE; the hash chain shows any other change) and hash-chained (issue 15)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_audit",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("service", sa.String(40), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_roles", postgresql.JSONB(), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("target_type", sa.String(40), nullable=False),
        sa.Column("target_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("before", postgresql.JSONB(), nullable=True),
        sa.Column("after", postgresql.JSONB(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_staff_audit"),
        sa.UniqueConstraint("event_id", name="uq_staff_audit_event_id"),
    )
    op.create_index("ix_staff_audit_actor", "staff_audit", ["actor_id", "seq"])
    op.create_index("ix_staff_audit_target", "staff_audit", ["target_type", "target_id"])
    op.create_index("ix_staff_audit_occurred", "staff_audit", ["occurred_at"])
    op.create_index("ix_staff_audit_action", "staff_audit", ["action"])
    op.execute(
        """
        CREATE FUNCTION staff_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'staff_audit is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER staff_audit_no_change BEFORE UPDATE OR DELETE ON staff_audit "
        "FOR EACH ROW EXECUTE FUNCTION staff_audit_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER staff_audit_no_change ON staff_audit")
    op.execute("DROP FUNCTION staff_audit_append_only()")
    op.drop_table("staff_audit")
