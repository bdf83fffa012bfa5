"""Banks with their own module (current-state store, alarms, power statistics), bank identity and
state history, cabinet operating data, and a spatial index for the map.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BANK_COLUMNS = [
    sa.Column("qr_code", sa.String(128), nullable=True),
    sa.Column("nfc_uid", sa.String(64), nullable=True),
    sa.Column("ble_mac", sa.String(32), nullable=True),
    sa.Column("capacity_mah", sa.Integer(), nullable=True),
    sa.Column("in_service_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("has_module", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    sa.Column("online", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rssi_dbm", sa.Integer(), nullable=True),
    sa.Column("telemetry_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lat", sa.Float(), nullable=True),
    sa.Column("lon", sa.Float(), nullable=True),
    sa.Column("position_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("charging", sa.Boolean(), nullable=True),
    sa.Column("temperature_c", sa.Float(), nullable=True),
    sa.Column("charge_cycles", sa.Integer(), nullable=True),
    sa.Column("health_pct", sa.Integer(), nullable=True),
    sa.Column("charge_mah_total", sa.BigInteger(), nullable=True),
    sa.Column("discharge_mah_total", sa.BigInteger(), nullable=True),
    sa.Column("moved_alarm_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("high_temp_alarm_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("position_overdue_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("maintenance_due_at", sa.DateTime(timezone=True), nullable=True),
]


TRANSITION_TRIGGER = """
CREATE FUNCTION record_bank_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO bank_transitions (bank_id, from_state, to_state, reason, at)
        VALUES (NEW.id, CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.state END, NEW.state,
                left(coalesce(nullif(current_setting('pb.transition_reason', true), ''), lower(TG_OP)), 100), now());
    END IF;
    RETURN NEW;
END $$
"""
TRANSITION_TRIGGER_ON_BANKS = """
CREATE TRIGGER banks_state_transition AFTER INSERT OR UPDATE OF state ON banks
    FOR EACH ROW EXECUTE FUNCTION record_bank_transition();
"""


def upgrade() -> None:
    for column in BANK_COLUMNS:
        op.add_column("banks", column)
    op.drop_constraint("ck_banks_state", "banks", type_="check")
    op.create_check_constraint(
        "ck_banks_state", "banks", "state IN ('in_cabinet', 'rented', 'faulty', 'maintenance', 'lost', 'retired')"
    )
    op.create_index(
        "uq_banks_qr_code", "banks", ["qr_code"], unique=True, postgresql_where=sa.text("qr_code IS NOT NULL")
    )
    op.create_index(
        "uq_banks_nfc_uid", "banks", ["nfc_uid"], unique=True, postgresql_where=sa.text("nfc_uid IS NOT NULL")
    )
    op.create_index(
        "uq_banks_ble_mac", "banks", ["ble_mac"], unique=True, postgresql_where=sa.text("ble_mac IS NOT NULL")
    )
    # The freshness sweep (7.2): idle banks with a module, by when they last gave a position.
    op.create_index(
        "ix_banks_module_position_at",
        "banks",
        ["position_at"],
        postgresql_where=sa.text("has_module AND state NOT IN ('rented', 'retired')"),
    )
    op.create_table(
        "bank_transitions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("bank_id", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(20), nullable=True),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(100), server_default="", nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bank_transitions"),
    )
    op.create_index("ix_bank_transitions_bank_id_at", "bank_transitions", ["bank_id", "at"])
    # Every state change is recorded, whatever code path made it; the reason comes from the
    # transaction-local setting `pb.transition_reason` when the writer set one.
    op.execute(TRANSITION_TRIGGER)
    op.execute(TRANSITION_TRIGGER_ON_BANKS)
    op.add_column("cabinets", sa.Column("region", sa.String(100), server_default="", nullable=False))
    op.add_column("cabinets", sa.Column("opening_hours", sa.String(100), server_default="", nullable=False))
    op.add_column("cabinets", sa.Column("state", sa.String(20), server_default="active", nullable=False))
    op.create_check_constraint("ck_cabinets_state", "cabinets", "state IN ('active', 'maintenance', 'retired')")
    # The map (6.1.4, 6.1.10): nearest cabinets through a GiST index on earth coordinates.
    op.execute("CREATE EXTENSION IF NOT EXISTS cube")
    op.execute("CREATE EXTENSION IF NOT EXISTS earthdistance")
    op.execute("CREATE INDEX ix_cabinets_earth ON cabinets USING gist (ll_to_earth(lat, lon))")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_cabinets_earth")
    op.drop_constraint("ck_cabinets_state", "cabinets", type_="check")
    for name in ("state", "opening_hours", "region"):
        op.drop_column("cabinets", name)
    op.execute("DROP TRIGGER IF EXISTS banks_state_transition ON banks")
    op.execute("DROP FUNCTION IF EXISTS record_bank_transition()")
    op.drop_table("bank_transitions")
    for name in ("ix_banks_module_position_at", "uq_banks_ble_mac", "uq_banks_nfc_uid", "uq_banks_qr_code"):
        op.drop_index(name, table_name="banks")
    op.drop_constraint("ck_banks_state", "banks", type_="check")
    op.create_check_constraint("ck_banks_state", "banks", "state IN ('in_cabinet', 'rented', 'faulty', 'maintenance')")
    for column in reversed(BANK_COLUMNS):
        op.drop_column("banks", column.name)
