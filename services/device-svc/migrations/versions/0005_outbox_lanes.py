"""The outbox split into two lanes (kit.outbox): a partial index for each lane's unpublished rows, so
neither relay walks over the other lane's backlog. The predicates are the relay's filters, verbatim
(PostgreSQL uses a partial index only for a query whose WHERE implies the index's).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BULK = "'device.rejections.v1', 'device.status.v1', 'device.telemetry.v1'"


def upgrade() -> None:
    op.execute(
        f"CREATE INDEX ix_outbox_unpublished_critical ON outbox (id) WHERE published_at IS NULL AND topic NOT IN ({BULK})"
    )
    op.execute(
        f"CREATE INDEX ix_outbox_unpublished_bulk ON outbox (id) WHERE published_at IS NULL AND topic IN ({BULK})"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_outbox_unpublished_bulk")
    op.execute("DROP INDEX ix_outbox_unpublished_critical")
