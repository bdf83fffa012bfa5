"""device-svc tables: the registry (cabinets, slots, banks, credentials), eject commands, and the
inbound message ids used to drop replayed device reports."""

from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)

BANK_STATES = ("in_cabinet", "rented", "faulty", "maintenance", "lost", "retired")
CABINET_STATES = ("active", "maintenance", "retired")
COMMAND_STATES = ("sent", "succeeded", "failed", "expired")


class Base(DeclarativeBase):
    metadata = metadata


class Cabinet(Base):
    __tablename__ = "cabinets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(200), server_default="")
    slot_count: Mapped[int] = mapped_column(Integer)
    online: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rssi_dbm: Mapped[int | None] = mapped_column(Integer)
    firmware: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(100), server_default="")
    opening_hours: Mapped[str] = mapped_column(String(100), server_default="")
    state: Mapped[str] = mapped_column(String(20), server_default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Device times (checked against our clock) of the newest slot snapshot (hello / inventory) and
    # signal reading applied: an older one arriving later changes nothing.
    inventory_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rssi_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The night light (lighting/): `auto` lights it between local sunset and sunrise, `on` / `off` are an
    # operator's override; `light_on_until` is when the last scheduled "on" command runs out.
    night_light: Mapped[str] = mapped_column(String(10), server_default="auto")
    light_on_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The protocol the cabinet speaks (device_svc/protocols/): `native` or a maker's, translated at the edge.
    protocol: Mapped[str] = mapped_column(String(20), server_default="native")
    # The hardware model: which firmware images it takes (firmware/).
    model: Mapped[str] = mapped_column(String(50), server_default="CAB-STD")

    __table_args__ = (
        Index("ix_cabinets_online_last_seen", "last_seen_at", postgresql_where=text("online")),
        CheckConstraint("state IN ('active', 'maintenance', 'retired')", name="state"),
        CheckConstraint("night_light IN ('auto', 'on', 'off')", name="night_light"),
        CheckConstraint("protocol IN ('native', 'volinks')", name="protocol"),
        # and ix_cabinets_earth: GiST on ll_to_earth(lat, lon) (migration 0002; cube + earthdistance)
    )


class Slot(Base):
    __tablename__ = "slots"

    cabinet_id: Mapped[str] = mapped_column(String(64), ForeignKey("cabinets.id"), primary_key=True)
    slot_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    bank_id: Mapped[str | None] = mapped_column(String(64))
    fault: Mapped[str | None] = mapped_column(String(30))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # A bank sits in at most one slot.
    __table_args__ = (Index("uq_slots_bank_id", "bank_id", unique=True, postgresql_where=text("bank_id IS NOT NULL")),)


class Bank(Base):
    __tablename__ = "banks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(50), server_default="PB-5000")
    battery_pct: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    cabinet_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("cabinets.id"))
    slot_no: Mapped[int | None] = mapped_column(Integer)
    state_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_report_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Registry (6.2.1, 6.3.2)
    qr_code: Mapped[str | None] = mapped_column(String(128))
    nfc_uid: Mapped[str | None] = mapped_column(String(64))
    ble_mac: Mapped[str | None] = mapped_column(String(32))
    capacity_mah: Mapped[int | None] = mapped_column(Integer)
    in_service_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Banks with their own module: presence and the current-state store (written in batches; a
    # report older than `telemetry_at` never overwrites it).
    has_module: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    online: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rssi_dbm: Mapped[int | None] = mapped_column(Integer)
    telemetry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    position_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    charging: Mapped[bool | None] = mapped_column(Boolean)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    charge_cycles: Mapped[int | None] = mapped_column(Integer)
    health_pct: Mapped[int | None] = mapped_column(Integer)
    charge_mah_total: Mapped[int | None] = mapped_column(BigInteger)
    discharge_mah_total: Mapped[int | None] = mapped_column(BigInteger)
    # Open alarms (operations list); cleared when the condition goes away.
    moved_alarm_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    high_temp_alarm_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    position_overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    maintenance_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when operations put the bank in maintenance / faulty / lost by hand: cabinet reports then
    # record where it is but keep that state until operations clear it.
    operator_hold: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Set while users' fault reports about this bank are open (notify-svc's tickets): it is not lent
    # until staff clear them (`ops` clear-fault-reports), whatever the cabinet reports.
    reported_fault_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('in_cabinet', 'rented', 'faulty', 'maintenance', 'lost', 'retired')", name="state"),
        Index("ix_banks_cabinet_id", "cabinet_id"),
        Index("uq_banks_qr_code", "qr_code", unique=True, postgresql_where=text("qr_code IS NOT NULL")),
        Index("uq_banks_nfc_uid", "nfc_uid", unique=True, postgresql_where=text("nfc_uid IS NOT NULL")),
        Index("uq_banks_ble_mac", "ble_mac", unique=True, postgresql_where=text("ble_mac IS NOT NULL")),
        Index(
            "ix_banks_module_position_at",
            "position_at",
            postgresql_where=text("has_module AND state NOT IN ('rented', 'retired')"),
        ),
    )


class BankTransition(Base):
    """Every bank state change, with why (6.3.2)."""

    __tablename__ = "bank_transitions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bank_id: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(100), server_default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_bank_transitions_bank_id_at", "bank_id", "at"),)


class DeviceCredential(Base):
    """`password_hash` is our argon2 copy (to verify a device); `broker_hash` is the Mosquitto
    PBKDF2-SHA512 entry the broker's password file is regenerated from. No plaintext is kept."""

    __tablename__ = "device_credentials"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(Text)
    broker_hash: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    rotated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("kind IN ('cabinet', 'bank')", name="kind"),)


class DeviceCertificate(Base):
    """A client certificate issued to a device from its CSR (certificates/); revoked ones are in the CRL."""

    __tablename__ = "device_certificates"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeviceCrl(Base):
    """The device CA's current CRL (one row), written to the broker by the broker-auth sidecar."""

    __tablename__ = "device_crl"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    pem: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Command(Base):
    __tablename__ = "commands"

    cmd_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    # None for an eject staff asked for maintenance (ops/): then its reason and who asked are kept.
    rental_id: Mapped[UUID | None] = mapped_column(PgUUID(as_uuid=True))
    maintenance_reason: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str | None] = mapped_column(String(64))
    # The renter (absent on commands from before it was kept): shows them their bank (rented/).
    user_id: Mapped[UUID | None] = mapped_column(PgUUID(as_uuid=True))
    code: Mapped[str] = mapped_column(String(128))
    cabinet_id: Mapped[str] = mapped_column(String(64))
    bank_id: Mapped[str] = mapped_column(String(64))
    slot: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The trace id of the request that caused the eject, restored when the device answers.
    correlation_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint("status IN ('sent', 'succeeded', 'failed', 'expired')", name="status"),
        CheckConstraint("(rental_id IS NULL) = (maintenance_reason IS NOT NULL)", name="rental_or_maintenance"),
        Index("ix_commands_sent_deadline", "deadline", postgresql_where=text("status = 'sent'")),
        # At most one eject in flight per bank.
        Index("uq_commands_sent_bank", "bank_id", unique=True, postgresql_where=text("status = 'sent'")),
        Index("ix_commands_user_id", "user_id", postgresql_where=text("user_id IS NOT NULL")),
    )


class PositionConsent(Base):
    """A user's consent to see the position of the bank they rent (6.1.9): the bank reports where it is,
    so where they are; shown to them only, and only while they consent."""

    __tablename__ = "position_consents"

    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserLightRequest(Base):
    """A user's request to light a cabinet (kept for the per-user limit across replicas)."""

    __tablename__ = "user_light_requests"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True))
    cabinet_id: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_user_light_requests_user_at", "user_id", "requested_at"),)


class InboundMessage(Base):
    __tablename__ = "inbound_messages"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_inbound_messages_received_at", "received_at"),)


class BankFaultReport(Base):
    """A user's report that a bank is broken (one per ticket), open until staff clear it."""

    __tablename__ = "bank_fault_reports"
    __table_args__ = (Index("ix_bank_fault_reports_open", "bank_id", postgresql_where=text("cleared_at IS NULL")),)

    ticket_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    bank_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True))
    cabinet_id: Mapped[str | None] = mapped_column(String(64))
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cleared_by: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)


MAINTENANCE_OPEN_STATUSES = ("open", "assigned", "in_progress")


class MaintenanceTask(Base):
    """Work for field staff about one device, from an alarm, a fault report or the cycle/health rule
    (device_svc/maintenance); at most one open task per device and cause."""

    __tablename__ = "maintenance_tasks"

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    device_kind: Mapped[str] = mapped_column(String(10))
    cause: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str] = mapped_column(String(200), server_default="")
    cabinet_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), server_default="open")
    assignee: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("status IN ('open', 'assigned', 'in_progress', 'done', 'cancelled')", name="status"),
        CheckConstraint("device_kind IN ('cabinet', 'bank')", name="device_kind"),
        Index(
            "uq_maintenance_tasks_open",
            "device_id",
            "cause",
            unique=True,
            postgresql_where=text("status IN ('open', 'assigned', 'in_progress')"),
        ),
        Index("ix_maintenance_tasks_status_opened_at", "status", "opened_at"),
        Index("ix_maintenance_tasks_device_cause", "device_id", "cause", "closed_at"),
    )


class MaintenanceTaskHistory(Base):
    __tablename__ = "maintenance_task_history"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("maintenance_tasks.id"))
    action: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, server_default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_maintenance_task_history_task_id", "task_id", "id"),)


class AdPlaylist(Base):
    """The newest cabinet-screen playlist notify-svc published (its version and every ad not yet ended)."""

    __tablename__ = "ad_playlists"

    slot: Mapped[str] = mapped_column(String(20), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)  # notify-svc's: the clock in ms
    items: Mapped[list[dict[str, object]]] = mapped_column(JSONB, nullable=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CabinetPlaylist(Base):
    """What a cabinet's screen was last sent: `digest` of its items (a cabinet is sent again only when its
    part of the playlist changed), `version` rising per cabinet (the device keeps the highest): the clock in ms
    when sent, at least the previous one + 1."""

    __tablename__ = "cabinet_playlists"

    cabinet_id: Mapped[str] = mapped_column(String(64), ForeignKey("cabinets.id"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class BrokerAuthVersion(Base):
    """One row: how many committed changes the broker's view of device credentials has had (bumped by the
    statement trigger on device_credentials, migration 0015)."""

    __tablename__ = "broker_auth_version"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


class BrokerAuthSync(Base):
    """What each broker's auth sidecar last applied: the credentials version, how many devices, when."""

    __tablename__ = "broker_auth_syncs"

    broker_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


FIRMWARE_ROLLOUT_STATES = ("running", "paused", "halted", "completed", "cancelled")
FIRMWARE_UPDATE_STATES = (
    "pending",
    "sent",
    "downloading",
    "verified",
    "installing",
    "rebooting",
    "done",
    "failed",
    "rolled_back",
    "cancelled",
)


class FirmwareImage(Base):
    """An uploaded firmware image: its bytes (object storage in a large deployment), the SHA-256 computed
    here and the platform's Ed25519 signature of (model, version, sha256) that devices verify."""

    __tablename__ = "firmware_images"

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    model: Mapped[str] = mapped_column(String(50), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(200), nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    notes: Mapped[str] = mapped_column(String(500), server_default="")
    uploaded_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("uq_firmware_images_model_version", "model", "version", unique=True),)


class FirmwareRollout(Base):
    """A rollout of one image to a share of its model's cabinets (a percentage, a region, or both), a few at a
    time; halted when failures pass its threshold. `state` moves only through firmware/lifecycle.py."""

    __tablename__ = "firmware_rollouts"

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    image_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("firmware_images.id"), nullable=False)
    model: Mapped[str] = mapped_column(String(50), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    target_percent: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    target_region: Mapped[str | None] = mapped_column(String(6))
    batch_size: Mapped[int] = mapped_column(Integer, nullable=False)
    max_failures: Mapped[int | None] = mapped_column(Integer)
    max_failure_pct: Mapped[int | None] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(String(300), server_default="")
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        CheckConstraint("state IN ('running', 'paused', 'halted', 'completed', 'cancelled')", name="state"),
        Index("ix_firmware_rollouts_state", "state"),
    )


class FirmwareUpdate(Base):
    """One cabinet's update within a rollout. `state` moves only through firmware/lifecycle.py; `seq` is the
    cabinet's place in the rollout's order (a stable hash of its id), `deadline_at` when a silent one fails."""

    __tablename__ = "firmware_updates"

    rollout_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), ForeignKey("firmware_rollouts.id"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(String(64), ForeignKey("cabinets.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    cmd_id: Mapped[str | None] = mapped_column(String(64))
    from_version: Mapped[str | None] = mapped_column(String(64))
    progress_pct: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'sent', 'downloading', 'verified', 'installing', 'rebooting', 'done', 'failed', "
            "'rolled_back', 'cancelled')",
            name="state",
        ),
        Index("ix_firmware_updates_rollout_state", "rollout_id", "state", "seq"),
        Index("uq_firmware_updates_cmd_id", "cmd_id", unique=True, postgresql_where=text("cmd_id IS NOT NULL")),
        # A cabinet runs one update at a time, whatever the rollout.
        Index(
            "uq_firmware_updates_cabinet_active",
            "cabinet_id",
            unique=True,
            postgresql_where=text("state IN ('sent', 'downloading', 'verified', 'installing', 'rebooting')"),
        ),
    )
