"""Read side of the registry for the public API."""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.registry import repository as repo
from device_svc.registry.schemas import BankOut, CabinetDetailOut, CabinetOut, SlotOut
from kit.errors import NotFound


class CabinetNotFound(NotFound):
    code = "cabinet_not_found"
    title = "No such cabinet"


class BankNotFound(NotFound):
    code = "bank_not_found"
    title = "No such bank"


def cabinet_out(row: Any) -> dict[str, Any]:
    cabinet, available, occupied = row
    return {
        "id": cabinet.id,
        "name": cabinet.name,
        "lat": cabinet.lat,
        "lon": cabinet.lon,
        "address": cabinet.address,
        "online": cabinet.online,
        "slot_count": cabinet.slot_count,
        "banks_available": int(available or 0),
        "free_slots": max(cabinet.slot_count - int(occupied or 0), 0),
        "last_seen_at": cabinet.last_seen_at,
    }


async def list_cabinets(session: AsyncSession, min_battery_pct: int, after: str | None, limit: int) -> list[CabinetOut]:
    rows = await repo.list_cabinets(session, min_battery_pct, after, limit)
    return [CabinetOut(**cabinet_out(row)) for row in rows]


async def get_cabinet(session: AsyncSession, cabinet_id: str, min_battery_pct: int) -> CabinetDetailOut:
    row = await repo.cabinet_summary(session, cabinet_id, min_battery_pct)
    if row is None:
        raise CabinetNotFound(f"Cabinet {cabinet_id} is not registered")
    cabinet = row[0]
    slots = []
    for slot, bank in await repo.slot_details(session, cabinet_id):
        rentable = (
            bank is not None
            and bank.state == "in_cabinet"
            and bank.reported_fault_at is None
            and slot.fault is None
            and (bank.battery_pct or 0) >= min_battery_pct
        )
        slots.append(
            SlotOut(
                slot=slot.slot_no,
                bank_id=slot.bank_id,
                battery_pct=bank.battery_pct if bank is not None else None,
                fault=slot.fault,
                rentable=rentable,
            )
        )
    return CabinetDetailOut(
        **cabinet_out(row), model=cabinet.model, firmware=cabinet.firmware, rssi_dbm=cabinet.rssi_dbm, slots=slots
    )


async def get_bank(session: AsyncSession, bank_id: str) -> BankOut:
    bank = await repo.get_bank(session, bank_id)
    if bank is None:
        raise BankNotFound(f"Bank {bank_id} is not registered")
    return BankOut(
        id=bank.id,
        model=bank.model,
        state=bank.state,
        battery_pct=bank.battery_pct,
        cabinet_id=bank.cabinet_id,
        slot=bank.slot_no,
        state_changed_at=bank.state_changed_at,
        last_report_at=bank.last_report_at,
    )
