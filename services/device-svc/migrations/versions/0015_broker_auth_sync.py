"""Broker authentication kept by a sidecar next to each broker, not by device-svc (issue 17)

`broker_auth_version` counts committed changes to the broker's view of device credentials: a statement
trigger on device_credentials (insert, delete, or an update of broker_hash/active) bumps it and notifies
channel `device_credentials`. Each broker's sidecar (python -m device_svc.brokerauth) rewrites that broker's
password file from the registry, reloads it, and records the version it applied in `broker_auth_syncs`, so
any device-svc replica can tell when a new credential works at every broker.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broker_auth_version",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("id = 1", name="one_row"),
    )
    op.execute("INSERT INTO broker_auth_version (id, version) VALUES (1, 0)")
    op.create_table(
        "broker_auth_syncs",
        sa.Column("broker_id", sa.String(120), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        """
        CREATE FUNCTION device_credentials_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- an upsert: the row may be gone (tests empty every table between cases)
            INSERT INTO broker_auth_version (id, version) VALUES (1, 1)
                ON CONFLICT (id) DO UPDATE SET version = broker_auth_version.version + 1;
            PERFORM pg_notify('device_credentials', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER device_credentials_changed AFTER INSERT OR DELETE OR UPDATE OF broker_hash, active "
        "ON device_credentials FOR EACH STATEMENT EXECUTE FUNCTION device_credentials_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER device_credentials_changed ON device_credentials")
    op.execute("DROP FUNCTION device_credentials_changed()")
    op.drop_table("broker_auth_syncs")
    op.drop_table("broker_auth_version")
