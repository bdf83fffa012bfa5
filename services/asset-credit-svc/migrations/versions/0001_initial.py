"""asset-credit-svc initial schema: the double-entry ledger (accounts, ledger_transactions,
postings) with its invariants as database rules, top_ups, charges, outbox, processed_events

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ledger's invariants, enforced by the database whatever the code does:
# - a transaction has at least two postings and they sum to zero (checked at commit);
# - each posting's balance_after_fen = the account's previous balance_after_fen + amount_fen;
# - at commit an account's stored balance equals the balance after its latest posting;
# - postings and transactions are append-only (TRUNCATE, for tests, is not a row change).
LEDGER_RULES = [
    """
    CREATE FUNCTION ledger_check_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        total numeric;
        n integer;
        txn uuid;
    BEGIN
        IF TG_TABLE_NAME = 'postings' THEN
            txn := NEW.transaction_id;
        ELSE
            txn := NEW.id;
        END IF;
        SELECT coalesce(sum(amount_fen), 0), count(*) INTO total, n FROM postings WHERE transaction_id = txn;
        IF n < 2 OR total <> 0 THEN
            RAISE EXCEPTION 'ledger transaction % is unbalanced: % postings summing to %', txn, n, total
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_transaction()
    """,
    """
    CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_transaction()
    """,
    """
    CREATE FUNCTION ledger_check_posting_chain() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        previous bigint;
    BEGIN
        SELECT balance_after_fen INTO previous FROM postings
            WHERE account_id = NEW.account_id ORDER BY id DESC LIMIT 1;
        IF coalesce(previous, 0) + NEW.amount_fen <> NEW.balance_after_fen THEN
            RAISE EXCEPTION 'posting to account % breaks the balance chain (% + % <> %)',
                NEW.account_id, coalesce(previous, 0), NEW.amount_fen, NEW.balance_after_fen
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER postings_chain BEFORE INSERT ON postings
        FOR EACH ROW EXECUTE FUNCTION ledger_check_posting_chain()
    """,
    """
    CREATE FUNCTION ledger_check_account_balance() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        stored bigint;
        latest bigint;
    BEGIN
        SELECT balance_fen INTO stored FROM accounts WHERE id = NEW.id;
        SELECT balance_after_fen INTO latest FROM postings WHERE account_id = NEW.id ORDER BY id DESC LIMIT 1;
        IF stored <> coalesce(latest, 0) THEN
            RAISE EXCEPTION 'account % holds % fen but its postings say %', NEW.id, stored, coalesce(latest, 0)
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER accounts_balance_matches_postings AFTER INSERT OR UPDATE ON accounts
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_account_balance()
    """,
    """
    CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """,
    """
    CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """,
]

DROP_LEDGER_RULES = [
    "DROP TRIGGER IF EXISTS ledger_transactions_append_only ON ledger_transactions",
    "DROP TRIGGER IF EXISTS postings_append_only ON postings",
    "DROP TRIGGER IF EXISTS accounts_balance_matches_postings ON accounts",
    "DROP TRIGGER IF EXISTS postings_chain ON postings",
    "DROP TRIGGER IF EXISTS postings_balanced ON postings",
    "DROP TRIGGER IF EXISTS ledger_transactions_balanced ON ledger_transactions",
    "DROP FUNCTION IF EXISTS ledger_refuse_change()",
    "DROP FUNCTION IF EXISTS ledger_check_account_balance()",
    "DROP FUNCTION IF EXISTS ledger_check_posting_chain()",
    "DROP FUNCTION IF EXISTS ledger_check_transaction()",
]


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="CNY", nullable=False),
        sa.Column("allow_negative", sa.Boolean(), nullable=False),
        sa.Column("balance_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind <> 'user_balance' OR (user_id IS NOT NULL AND NOT allow_negative)",
            name=op.f("ck_accounts_user_balance"),
        ),
        sa.CheckConstraint("allow_negative OR balance_fen >= 0", name=op.f("ck_accounts_balance_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_index(
        "uq_accounts_system_kind", "accounts", ["kind"], unique=True, postgresql_where=sa.text("user_id IS NULL")
    )
    op.create_index(
        "uq_accounts_user_kind",
        "accounts",
        ["user_id", "kind"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("reference", name=op.f("uq_ledger_transactions_reference")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], unique=False, postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="done", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_processed_events")),
    )
    op.create_table(
        "charges",
        sa.Column("charge_id", sa.UUID(), nullable=False),
        sa.Column("rental_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_reason", sa.String(length=100), nullable=True),
        sa.Column("balance_after_fen", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", sa.UUID(), nullable=True),
        sa.Column("source_event_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'settled', 'failed')", name=op.f("ck_charges_status")),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["ledger_transactions.id"], name=op.f("fk_charges_transaction_id_ledger_transactions")
        ),
        sa.PrimaryKeyConstraint("charge_id", name=op.f("pk_charges")),
    )
    op.create_index("ix_charges_user_id", "charges", ["user_id"], unique=False)
    op.create_table(
        "postings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("transaction_id", sa.UUID(), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_fen", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount_fen <> 0", name=op.f("ck_postings_amount_not_zero")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_postings_account_id_accounts")),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["ledger_transactions.id"], name=op.f("fk_postings_transaction_id_ledger_transactions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postings")),
        sa.UniqueConstraint("transaction_id", "account_id", name="uq_postings_transaction_account"),
    )
    op.create_index(
        "ix_postings_account_id_desc", "postings", ["account_id", sa.literal_column("id DESC")], unique=False
    )
    op.create_table(
        "top_ups",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("provider_trade_no", sa.String(length=100), nullable=True),
        sa.Column("failure_reason", sa.String(length=100), nullable=True),
        sa.Column("transaction_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_top_ups_status")),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_top_ups_amount_positive")),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["ledger_transactions.id"], name=op.f("fk_top_ups_transaction_id_ledger_transactions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_top_ups")),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_top_ups_user_idempotency_key"),
    )
    for statement in LEDGER_RULES:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_LEDGER_RULES:
        op.execute(statement)
    op.drop_table("top_ups")
    op.drop_index("ix_postings_account_id_desc", table_name="postings")
    op.drop_table("postings")
    op.drop_index("ix_charges_user_id", table_name="charges")
    op.drop_table("charges")
    op.drop_table("processed_events")
    op.drop_index("ix_outbox_unpublished", table_name="outbox", postgresql_where=sa.text("published_at IS NULL"))
    op.drop_table("outbox")
    op.drop_table("ledger_transactions")
    op.drop_index("uq_accounts_user_kind", table_name="accounts", postgresql_where=sa.text("user_id IS NOT NULL"))
    op.drop_index("uq_accounts_system_kind", table_name="accounts", postgresql_where=sa.text("user_id IS NULL"))
    op.drop_table("accounts")
