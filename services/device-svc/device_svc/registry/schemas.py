"""Public views of the registry."""

from datetime import datetime

from pydantic import BaseModel


class CabinetOut(BaseModel):
    id: str
    name: str
    lat: float
    lon: float
    address: str
    online: bool
    slot_count: int
    banks_available: int
    free_slots: int
    last_seen_at: datetime | None


class SlotOut(BaseModel):
    slot: int
    bank_id: str | None
    battery_pct: int | None
    fault: str | None
    rentable: bool


class CabinetDetailOut(CabinetOut):
    model: str  # the hardware model: which firmware images it takes (docs/firmware.md)
    firmware: str | None
    rssi_dbm: int | None
    slots: list[SlotOut]


class CabinetList(BaseModel):
    items: list[CabinetOut]
    next_after: str | None = None


class BankOut(BaseModel):
    id: str
    model: str
    state: str
    battery_pct: int | None
    cabinet_id: str | None
    slot: int | None
    state_changed_at: datetime
    last_report_at: datetime | None
