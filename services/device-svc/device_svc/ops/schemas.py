"""Operations views (6.3.2, 6.3.9) and requests."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AlarmKind = Literal[
    "moved_while_idle", "high_temperature", "position_overdue", "maintenance_due", "cabinet_offline", "bank_offline"
]
ManualState = Literal["in_cabinet", "maintenance", "faulty", "lost", "retired"]


class AlarmOut(BaseModel):
    device_id: str
    device_kind: Literal["cabinet", "bank"]
    kind: AlarmKind
    since: datetime | None
    detail: str = ""


class AlarmList(BaseModel):
    items: list[AlarmOut]


class ResolveAlarm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["moved_while_idle", "high_temperature", "position_overdue", "maintenance_due"]
    note: str = Field(
        default="",
        max_length=1000,
        description="What was found or done; closes the alarm's open maintenance task with this note",
    )


class AlarmResolved(BaseModel):
    device_id: str
    kind: str
    closed_tasks: list[uuid.UUID] = Field(description="The alarm's open maintenance tasks, now done")


class DeviceStatusOut(BaseModel):
    """Communication status of one device."""

    device_id: str
    device_kind: Literal["cabinet", "bank"]
    online: bool
    last_seen_at: datetime | None
    rssi_dbm: int | None
    state: str


class DeviceStatusList(BaseModel):
    items: list[DeviceStatusOut]


class CabinetPresence(BaseModel):
    """The fleet's communication status at a glance (6.3.9): counts, and which cabinets are silent."""

    cabinets: int
    online: int
    heard_since: datetime | None
    # Online and heard from after `heard_since` (all online ones without it).
    heard: int
    # Cabinets not counted in `heard`, by id, at most `silent_limit` of them; `silent_total` counts all.
    silent: list[str]
    silent_total: int


class BankAdminOut(BaseModel):
    id: str
    model: str
    state: str
    cabinet_id: str | None
    slot: int | None
    qr_code: str | None
    nfc_uid: str | None
    ble_mac: str | None
    capacity_mah: int | None
    in_service_at: datetime | None
    days_in_service: int | None
    has_module: bool
    online: bool
    last_seen_at: datetime | None
    battery_pct: int | None
    charging: bool | None
    lat: float | None
    lon: float | None
    position_at: datetime | None
    temperature_c: float | None
    charge_cycles: int | None
    health_pct: int | None
    charge_mah_total: int | None
    discharge_mah_total: int | None
    rentals: int
    maintenance_due: bool
    open_alarms: list[str]


class BankAdminList(BaseModel):
    items: list[BankAdminOut]
    # The last id of a full page: pass it as `after` for the next one (None: no more).
    next_after: str | None = None


class TransitionOut(BaseModel):
    from_state: str | None
    to_state: str
    reason: str
    at: datetime


class TransitionList(BaseModel):
    items: list[TransitionOut]


class StateChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: ManualState
    reason: str = Field(min_length=1, max_length=100)


class LightRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: bool = True
    duration_s: int = Field(default=60, ge=1, le=3600)


class CommandAccepted(BaseModel):
    cmd_id: str
    device_id: str
    type: Literal["ring", "light", "eject"]
    expires_at: datetime
    slot: int | None = None  # an eject: the slot the bank leaves


class MaintenanceEject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200)


class MaintenanceTask(BaseModel):
    """Work for field staff: a device to visit and why."""

    device_id: str
    device_kind: Literal["cabinet", "bank"]
    task: str
    since: datetime | None
    cabinet_id: str | None = None
    slot: int | None = None
    lat: float | None = None
    lon: float | None = None


class MaintenanceTaskList(BaseModel):
    items: list[MaintenanceTask]
