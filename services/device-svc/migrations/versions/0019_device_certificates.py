"""Per-device X.509 client certificates (issue 15): the certificates issued from devices' CSRs, and the device
CA's current CRL, which the broker-auth sidecar writes beside the broker's password file (a change bumps
broker_auth_version and notifies, as a credential change does).

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_certificates",
        sa.Column("serial", sa.String(64), primary_key=True),  # hex
        sa.Column("device_id", sa.String(64), nullable=False, index=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "device_crl",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "CREATE TRIGGER device_crl_changed AFTER INSERT OR UPDATE OR DELETE ON device_crl "
        "FOR EACH STATEMENT EXECUTE FUNCTION device_credentials_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER device_crl_changed ON device_crl")
    op.drop_table("device_crl")
    op.drop_table("device_certificates")
