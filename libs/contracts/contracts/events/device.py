"""Events and commands of device-svc: ejects, returns, presence, telemetry, alarms, faults and maintenance tasks."""

from enum import StrEnum
from typing import Literal, TypeAlias
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.events._base import _Data
from contracts.regions import RegionRef
from contracts.topics import Topic


class EjectFailureReason(StrEnum):
    """Why a borrow did not eject a bank; billing turns each into a user-facing error code."""

    BANK_BATTERY_LOW = "bank_battery_low"
    BANK_FAULTY = "bank_faulty"
    BANK_NOT_AVAILABLE = "bank_not_available"
    UNKNOWN_CODE = "unknown_code"
    CABINET_OFFLINE = "cabinet_offline"
    NO_RENTABLE_BANK = "no_rentable_bank"
    DEVICE_NO_ANSWER = "device_no_answer"
    EJECT_FAILED = "eject_failed"
    MOTOR_FAULT = "motor_fault"
    BANK_NOT_PRESENT = "bank_not_present"
    COMMAND_EXPIRED = "command_expired"


class EjectBank(_Data):
    """Command to device-svc: eject a bank for a rental. `code` is what the user scanned: a bank's
    id (that bank) or a cabinet's id (device-svc picks the cabinet's best rentable bank)."""

    type: Literal["device.eject_bank"] = "device.eject_bank"
    command_id: UUID
    rental_id: UUID
    user_id: UUID
    code: str = Field(min_length=1, max_length=128)
    deadline: AwareDatetime = Field(description="After this instant the eject must not happen")


class BankEjected(_Data):
    type: Literal["device.bank.ejected"] = "device.bank.ejected"
    command_id: UUID
    rental_id: UUID
    bank_id: str
    cabinet_id: str
    slot: int
    battery_pct: int
    ejected_at: AwareDatetime
    bank_model: str | None = Field(default=None, max_length=50, description="The bank's model (rental history)")
    bank_in_service_at: AwareDatetime | None = Field(default=None, description="When the bank went into service")
    bank_charge_cycles: int | None = Field(default=None, ge=0, description="Its battery's cycles, when known")
    bank_health_pct: int | None = Field(default=None, ge=0, le=100, description="Its battery's health, when known")
    region: RegionRef | None = Field(
        default=None, description="The cabinet's division and H3 cell (absent from older producers)"
    )


class EjectFailed(_Data):
    type: Literal["device.eject.failed"] = "device.eject.failed"
    command_id: UUID
    rental_id: UUID
    bank_id: str | None
    cabinet_id: str | None
    reason: EjectFailureReason
    detail: str = ""


class BankReturned(_Data):
    """A cabinet reported a bank back in a slot. `returned_at` is the device's time, already
    checked against the server clock; `device_reported_at` is what the device said."""

    type: Literal["device.bank.returned"] = "device.bank.returned"
    report_id: str
    bank_id: str
    cabinet_id: str
    slot: int
    battery_pct: int | None
    returned_at: AwareDatetime
    device_reported_at: AwareDatetime
    received_at: AwareDatetime
    clock_adjusted: bool = False
    region: RegionRef | None = Field(
        default=None, description="The cabinet's division and H3 cell (absent from older producers)"
    )


class CabinetStatusChanged(_Data):
    type: Literal["device.cabinet.status_changed"] = "device.cabinet.status_changed"
    cabinet_id: str
    online: bool
    at: AwareDatetime
    reason: str = ""


class PresenceReason(StrEnum):
    """Why a device's online state changed."""

    CONNECT = "connect"  # it announced itself (retained status online, or hello)
    MESSAGE = "message"  # another message from a device shown offline
    LAST_WILL = "last_will"  # the broker published its last will (or it said offline itself)
    HEARTBEAT_SILENCE = "heartbeat_silence"  # nothing heard for the offline timeout
    CREDENTIAL_REVOKED = "credential_revoked"  # its credential was revoked: the broker dropped it


class DevicePresenceChanged(_Data):
    """A cabinet or a bank module went online or offline: once per transition, keyed by device id."""

    type: Literal["device.presence.changed"] = "device.presence.changed"
    device_id: str
    device_kind: Literal["cabinet", "bank"]
    online: bool
    reason: PresenceReason
    at: AwareDatetime
    last_seen_at: AwareDatetime | None = None
    rssi_dbm: int | None = None


class DeviceTelemetryReported(_Data):
    """Normalised device report for the data team (heartbeats and inventories)."""

    type: Literal["device.telemetry.reported"] = "device.telemetry.reported"
    device_id: str
    reported_at: AwareDatetime
    received_at: AwareDatetime
    rssi_dbm: int | None = None
    banks_present: int | None = None
    banks_rentable: int | None = None
    slot_count: int | None = Field(default=None, description="A cabinet's slots (free return slots = this - present)")
    # Banks with their own module (bank_report); absent for cabinets.
    device_kind: Literal["cabinet", "bank"] | None = None
    battery_pct: int | None = None
    charging: bool | None = None
    lat: float | None = None
    lon: float | None = None
    temperature_c: float | None = None
    charge_cycles: int | None = None
    health_pct: int | None = None
    charge_mah_total: int | None = None
    discharge_mah_total: int | None = None
    moving: bool | None = None
    region: RegionRef | None = Field(
        default=None,
        description="A cabinet's region, or a bank's from its position (absent from older producers)",
    )


class DeviceAlarmKind(StrEnum):
    MOVED_WHILE_IDLE = "moved_while_idle"  # 6.2.5: accelerometer, bank not rented
    HIGH_TEMPERATURE = "high_temperature"
    POSITION_OVERDUE = "position_overdue"  # 7.2: an idle bank silent on position for 4 hours
    MAINTENANCE_DUE = "maintenance_due"  # 7.4.1: near its cycle budget or low battery health
    FLOODING = "flooding"  # a device over its MQTT message budget: its excess is dropped (issue 15)


class DeviceAlarmRaised(_Data):
    """Something operations must look at (also listed by device-svc's operations API)."""

    type: Literal["device.alarm.raised"] = "device.alarm.raised"
    device_id: str
    kind: DeviceAlarmKind
    at: AwareDatetime
    detail: str = ""
    # What the device is, so a consumer can keep an alarm about a device it has not seen yet (None: a
    # producer from before this field).
    device_kind: Literal["cabinet", "bank"] | None = None


class DeviceMessageRejected(_Data):
    type: Literal["device.message.rejected"] = "device.message.rejected"
    device_id: str | None
    mqtt_topic: str
    reason: str
    at: AwareDatetime


class BankFaultCleared(_Data):
    """Staff inspected a bank users reported broken and cleared the reports: it is rentable again
    unless something else (its state, its slot) still keeps it."""

    type: Literal["device.bank.fault_cleared"] = "device.bank.fault_cleared"
    bank_id: str
    ticket_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    by: str = Field(max_length=100)
    note: str = Field(default="", max_length=500)
    at: AwareDatetime


class AdPlayCount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ad_id: str = Field(min_length=1, max_length=64)
    plays: int = Field(ge=1, le=1_000_000)


class AdPlaysReported(_Data):
    """A cabinet's screen reported what it played (MQTT `plays`, docs/protocol.md): per ad, how many turns it was
    shown between `period_start` and `period_end` (the cabinet's clock, checked against ours). `report_id` is the
    cabinet's msg_id: with `cabinet_id` it names the report, so a replayed one is counted once downstream."""

    type: Literal["device.ad_plays.reported"] = "device.ad_plays.reported"
    cabinet_id: str = Field(max_length=64)
    report_id: str = Field(min_length=1, max_length=64)
    playlist_version: int = Field(ge=1)
    period_start: AwareDatetime
    period_end: AwareDatetime
    items: list[AdPlayCount] = Field(min_length=1, max_length=16)
    at: AwareDatetime


class MaintenanceCause(StrEnum):
    """Why a maintenance task was opened; one open task per device and cause."""

    MOVED_WHILE_IDLE = "moved_while_idle"
    HIGH_TEMPERATURE = "high_temperature"
    POSITION_OVERDUE = "position_overdue"
    MAINTENANCE_DUE = "maintenance_due"  # 7.4.1: the cycle budget (1,000) approached or battery health low
    FAULT_REPORT = "fault_report"  # users reported the bank broken
    BANK_FAULTY = "bank_faulty"  # the bank is in state faulty
    SLOT_FAULT = "slot_fault"  # a cabinet reported a slot abnormal
    CABINET_OFFLINE = "cabinet_offline"  # silent for longer than the maintenance threshold


class MaintenanceTaskStatus(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class MaintenanceTaskOpened(_Data):
    """device-svc opened a task for field staff (from an alarm, a fault report or the cycle/health rule)."""

    type: Literal["device.maintenance_task.opened"] = "device.maintenance_task.opened"
    task_id: UUID
    device_id: str = Field(max_length=64)
    device_kind: Literal["cabinet", "bank"]
    cause: MaintenanceCause
    detail: str = Field(default="", max_length=200)
    cabinet_id: str | None = Field(default=None, max_length=64)
    at: AwareDatetime


class MaintenanceTaskStatusChanged(_Data):
    """A maintenance task moved through its lifecycle (one event per transition, in order per task)."""

    type: Literal["device.maintenance_task.status_changed"] = "device.maintenance_task.status_changed"
    task_id: UUID
    device_id: str = Field(max_length=64)
    cause: MaintenanceCause
    from_status: MaintenanceTaskStatus
    to_status: MaintenanceTaskStatus
    action: str = Field(max_length=40)
    by: str = Field(max_length=100)
    assignee: str | None = Field(default=None, max_length=100)
    note: str = Field(default="", max_length=1000)
    at: AwareDatetime


class FirmwareUpdateState(StrEnum):
    """One cabinet's update within a rollout (device-svc firmware/lifecycle.py holds the transitions)."""

    PENDING = "pending"
    SENT = "sent"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


class FirmwareRolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"  # failures passed the rollout's threshold: nothing new starts until resumed
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class FirmwareUpdateChanged(_Data):
    """A cabinet's firmware update moved (sent, a stage the cabinet reported, its result, a timeout). On
    `done` the cabinet runs `version` (the registry's `firmware`)."""

    type: Literal["device.firmware_update.changed"] = "device.firmware_update.changed"
    rollout_id: UUID
    cabinet_id: str = Field(max_length=64)
    model: str = Field(max_length=50)
    version: str = Field(max_length=64)
    from_state: FirmwareUpdateState
    to_state: FirmwareUpdateState
    error: str | None = Field(default=None, max_length=64)
    running_version: str | None = Field(default=None, max_length=64)
    at: AwareDatetime


class FirmwareRolloutChanged(_Data):
    """A firmware rollout changed state (created, paused, resumed, halted on failures, completed,
    cancelled), with its counts of cabinets per update state at that moment."""

    type: Literal["device.firmware_rollout.changed"] = "device.firmware_rollout.changed"
    rollout_id: UUID
    model: str = Field(max_length=50)
    version: str = Field(max_length=64)
    from_state: FirmwareRolloutState | None
    to_state: FirmwareRolloutState
    action: str = Field(max_length=40)
    by: str = Field(max_length=100)
    reason: str = Field(default="", max_length=300)
    counts: dict[FirmwareUpdateState, int] = Field(default_factory=dict)
    at: AwareDatetime


# Every event of this domain, joined into contracts.events.EventData.
Events: TypeAlias = (
    EjectBank
    | BankEjected
    | EjectFailed
    | BankReturned
    | CabinetStatusChanged
    | DevicePresenceChanged
    | DeviceTelemetryReported
    | DeviceAlarmRaised
    | DeviceMessageRejected
    | BankFaultCleared
    | MaintenanceTaskOpened
    | MaintenanceTaskStatusChanged
    | FirmwareUpdateChanged
    | FirmwareRolloutChanged
    | AdPlaysReported
)

TOPICS: dict[str, Topic] = {
    "device.eject_bank": Topic.DEVICE_COMMANDS,  # key: the scanned code
    "device.bank.ejected": Topic.DEVICE_EJECTS,
    "device.eject.failed": Topic.DEVICE_EJECTS,
    "device.bank.returned": Topic.DEVICE_RETURNS,
    "device.cabinet.status_changed": Topic.DEVICE_STATUS,
    "device.presence.changed": Topic.DEVICE_STATUS,
    "device.telemetry.reported": Topic.DEVICE_TELEMETRY,
    "device.alarm.raised": Topic.DEVICE_STATUS,
    "device.message.rejected": Topic.DEVICE_REJECTIONS,
    "device.bank.fault_cleared": Topic.DEVICE_FAULTS,  # key: bank_id
    "device.maintenance_task.opened": Topic.MAINTENANCE,
    "device.maintenance_task.status_changed": Topic.MAINTENANCE,
    "device.firmware_update.changed": Topic.FIRMWARE,  # key: rollout_id (a rollout's events stay in order)
    "device.firmware_rollout.changed": Topic.FIRMWARE,
    "device.ad_plays.reported": Topic.DEVICE_SCREENS,  # key: cabinet_id
}
