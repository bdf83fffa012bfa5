"""A user may choose the bank-card channel to pay what the balance does not cover

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_payment_methods_channel"), "payment_methods", type_="check")
    op.create_check_constraint(
        op.f("ck_payment_methods_channel"), "payment_methods", "channel IN ('alipay', 'wechat', 'bank_card')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM payment_methods WHERE channel = 'bank_card'")
    op.drop_constraint(op.f("ck_payment_methods_channel"), "payment_methods", type_="check")
    op.create_check_constraint(op.f("ck_payment_methods_channel"), "payment_methods", "channel IN ('alipay', 'wechat')")
