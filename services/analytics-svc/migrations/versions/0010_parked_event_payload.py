"""A parked event (a consumer's event that failed every attempt) keeps its envelope, so an operator can
replay it after a fix (kit.parked, issue 14); done ids get an index on processed_at for retention
(kit.retention).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from kit.migrations import add_parked_event_payload, drop_parked_event_payload

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_parked_event_payload()


def downgrade() -> None:
    drop_parked_event_payload()
