"""Operations (6.3.2, 6.3.9): alarms, communication status, bank management, state changes with
a recorded reason, ring and night-light commands, and maintenance tasks for field staff."""

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.mqtt import Light, Ring
from device_svc.clock import datetime_to_ms
from device_svc.faults import repository as fault_reports
from device_svc.metrics import COMMANDS_DOWN
from device_svc.models import Bank
from device_svc.mqtt.downlink import Downlink
from device_svc.ops import repository as repo
from device_svc.ops.schemas import (
    AlarmOut,
    BankAdminOut,
    CabinetPresence,
    CommandAccepted,
    DeviceStatusOut,
    MaintenanceTask,
    TransitionOut,
)
from device_svc.registry import repository as registry
from device_svc.registry.service import BankNotFound, CabinetNotFound
from kit.errors import BusinessError, Conflict

if TYPE_CHECKING:
    from device_svc.commands.service import EjectService

log = logging.getLogger(__name__)

# Which manual state changes operations may make, from each state. A rented bank only leaves
# "rented" by a return (or is declared lost).
ALLOWED = {
    "in_cabinet": {"maintenance", "faulty", "lost", "retired"},
    "rented": {"lost"},
    "faulty": {"maintenance", "in_cabinet", "lost", "retired"},
    "maintenance": {"in_cabinet", "faulty", "lost", "retired"},
    "lost": {"maintenance", "retired"},
    "retired": set(),
}


# Manual states that cabinet reports keep (retired is final anyway).
HELD_STATES = frozenset({"maintenance", "faulty", "lost"})


class DeviceOffline(BusinessError):
    status = 409
    code = "device_offline"
    title = "The device is offline; the command was not sent"


class NotCarried(BusinessError):
    """The cabinet's protocol (a maker's, protocols/) has no such command."""

    status = 409
    code = "command_not_supported"
    title = "The cabinet's protocol has no such command; nothing was sent"


class NoModule(BusinessError):
    status = 409
    code = "bank_has_no_module"
    title = "The bank has no module of its own"


class BadTransition(Conflict):
    code = "bad_state_transition"
    title = "That state change is not allowed"


class CommandNotSent(BusinessError):
    status = 503
    code = "command_not_sent"
    title = "The command could not be handed to the broker"


async def alarms(session: AsyncSession, limit: int = 500) -> list[AlarmOut]:
    out: list[AlarmOut] = []
    for bank in await repo.banks_with_alarms(session, limit):
        for kind, column in repo.ALARM_COLUMNS.items():
            since = getattr(bank, column)
            if since is not None:
                alarm = {"device_id": bank.id, "device_kind": "bank", "kind": kind, "since": since}
                out.append(AlarmOut.model_validate(alarm | {"detail": _detail(bank, kind)}))
        if bank.has_module and not bank.online and bank.state != "retired":
            out.append(AlarmOut(device_id=bank.id, device_kind="bank", kind="bank_offline", since=bank.last_seen_at))
    for cabinet in await repo.offline_cabinets(session, limit):
        out.append(
            AlarmOut(device_id=cabinet.id, device_kind="cabinet", kind="cabinet_offline", since=cabinet.last_seen_at)
        )
    return out


def _detail(bank: Bank, kind: str) -> str:
    if kind == "maintenance_due":
        return f"cycles {bank.charge_cycles}, health {bank.health_pct}%"
    if kind == "high_temperature":
        return f"{bank.temperature_c} °C"
    if kind == "position_overdue":
        return f"last position {bank.position_at.isoformat() if bank.position_at else 'never'}"
    return f"state {bank.state}"


async def resolve_alarm(session: AsyncSession, device_id: str, kind: str) -> None:
    column = repo.ALARM_COLUMNS[kind]
    result = await session.execute(
        update(Bank).where(Bank.id == device_id).values({column: None}).returning(Bank.id),
        execution_options={"synchronize_session": False},
    )
    if result.first() is None:
        raise BankNotFound(f"Bank {device_id} is not registered")
    log.info("alarm resolved", extra={"device_id": device_id, "kind": kind})


async def device_statuses(
    session: AsyncSession, kind: str | None, online: bool | None, limit: int
) -> list[DeviceStatusOut]:
    return [
        DeviceStatusOut(
            device_id=d.id,
            device_kind=k,
            online=d.online,
            last_seen_at=d.last_seen_at,
            rssi_dbm=d.rssi_dbm,
            state=d.state,
        )
        for k, d in await repo.device_statuses(session, kind, online, limit)
    ]


async def cabinet_presence(session: AsyncSession, heard_since: datetime | None, silent_limit: int) -> CabinetPresence:
    (total, online, heard), silent = await repo.cabinet_presence(session, heard_since, silent_limit)
    return CabinetPresence(
        cabinets=total,
        online=online,
        heard_since=heard_since,
        heard=heard,
        silent=silent,
        silent_total=total - heard,
    )


def bank_admin_out(bank: Bank, rentals: int, now: datetime | None = None) -> BankAdminOut:
    now = now or datetime.now(UTC)
    days = (now - bank.in_service_at).days if bank.in_service_at is not None else None
    return BankAdminOut(
        id=bank.id,
        model=bank.model,
        state=bank.state,
        cabinet_id=bank.cabinet_id,
        slot=bank.slot_no,
        qr_code=bank.qr_code,
        nfc_uid=bank.nfc_uid,
        ble_mac=bank.ble_mac,
        capacity_mah=bank.capacity_mah,
        in_service_at=bank.in_service_at,
        days_in_service=days,
        has_module=bank.has_module,
        online=bank.online,
        last_seen_at=bank.last_seen_at,
        battery_pct=bank.battery_pct,
        charging=bank.charging,
        lat=bank.lat,
        lon=bank.lon,
        position_at=bank.position_at,
        temperature_c=bank.temperature_c,
        charge_cycles=bank.charge_cycles,
        health_pct=bank.health_pct,
        charge_mah_total=bank.charge_mah_total,
        discharge_mah_total=bank.discharge_mah_total,
        rentals=rentals,
        maintenance_due=bank.maintenance_due_at is not None,
        open_alarms=[k for k, c in repo.ALARM_COLUMNS.items() if getattr(bank, c) is not None],
    )


async def query_banks(session: AsyncSession, **filters: object) -> list[BankAdminOut]:
    rows = await repo.query_banks(session, **filters)  # type: ignore[arg-type]
    return [bank_admin_out(bank, int(rentals or 0)) for bank, rentals in rows]


async def bank(session: AsyncSession, bank_id: str) -> BankAdminOut:
    rows = await repo.query_banks(
        session, state=None, maintenance_due=None, has_module=None, cabinet_id=None, limit=1, offset=0, bank_id=bank_id
    )
    if not rows:
        raise BankNotFound(f"Bank {bank_id} is not registered")
    found, rentals = rows[0]
    return bank_admin_out(found, int(rentals or 0))


async def transitions(
    session: AsyncSession, bank_id: str, limit: int = 500, *, newest_first: bool = False
) -> list[TransitionOut]:
    if await registry.get_bank(session, bank_id) is None:
        raise BankNotFound(f"Bank {bank_id} is not registered")
    return [
        TransitionOut(from_state=t.from_state, to_state=t.to_state, reason=t.reason, at=t.at)
        for t in await repo.transitions(session, bank_id, limit, newest_first=newest_first)
    ]


async def change_state(session: AsyncSession, bank_id: str, state: str, reason: str, actor: str) -> Bank:
    bank = await registry.get_bank(session, bank_id, for_update=True)
    if bank is None:
        raise BankNotFound(f"Bank {bank_id} is not registered")
    if state == bank.state:
        return bank
    if state not in ALLOWED.get(bank.state, set()):
        raise BadTransition(f"A bank cannot go from {bank.state} to {state} by hand")
    if state == "in_cabinet" and bank.cabinet_id is None:
        raise BadTransition("The bank is in no cabinet; it goes back in service when a cabinet reports it")
    await repo.set_transition_reason(session, f"{reason} (by {actor})")
    bank.state = state
    bank.state_changed_at = datetime.now(UTC)
    # Held until operations change it again: a cabinet's report records where the bank is but does
    # not put it back in service (in_cabinet clears the hold).
    bank.operator_hold = state in HELD_STATES
    if state in ("lost", "retired"):
        if bank.cabinet_id is not None:
            await registry.empty_slot_of_bank(session, bank.id)
        bank.cabinet_id, bank.slot_no = None, None
    await session.flush()
    log.info("bank state changed by operations", extra={"bank_id": bank.id, "state": state, "actor": actor})
    return bank


async def ring(session: AsyncSession, downlink: Downlink, bank_id: str, duration_s: int) -> CommandAccepted:
    bank = await registry.get_bank(session, bank_id)
    if bank is None:
        raise BankNotFound(f"Bank {bank_id} is not registered")
    if not bank.has_module:
        raise NoModule(f"Bank {bank_id} cannot ring: it has no module")
    if not bank.online:
        COMMANDS_DOWN.labels("ring", "offline").inc()
        raise DeviceOffline(f"Bank {bank_id} is offline (last seen {bank.last_seen_at})")
    expires = datetime.now(UTC) + timedelta(seconds=30)
    msg = Ring(cmd_id=str(uuid.uuid4()), expires_at=datetime_to_ms(expires), duration_s=duration_s)
    await _send(downlink, bank_id, msg)
    return CommandAccepted(cmd_id=msg.cmd_id, device_id=bank_id, type="ring", expires_at=expires)


async def light(
    session: AsyncSession, downlink: Downlink, cabinet_id: str, on: bool, duration_s: int
) -> CommandAccepted:
    cabinet = await registry.get_cabinet(session, cabinet_id)
    if cabinet is None:
        raise CabinetNotFound(f"Cabinet {cabinet_id} is not registered")
    if cabinet.protocol != "native" and not await downlink.carries(cabinet_id, "light"):
        raise NotCarried(f"Cabinet {cabinet_id} speaks {cabinet.protocol}, which has no light command")
    if not cabinet.online:
        COMMANDS_DOWN.labels("light", "offline").inc()
        raise DeviceOffline(f"Cabinet {cabinet_id} is offline (last seen {cabinet.last_seen_at})")
    expires = datetime.now(UTC) + timedelta(seconds=10)
    msg = Light(cmd_id=str(uuid.uuid4()), expires_at=datetime_to_ms(expires), on=on, duration_s=duration_s)
    await _send(downlink, cabinet_id, msg)
    return CommandAccepted(cmd_id=msg.cmd_id, device_id=cabinet_id, type="light", expires_at=expires)


class NotInCabinet(Conflict):
    code = "bank_not_in_cabinet"
    title = "The bank is in no cabinet's slot; there is nothing to eject"


class EjectPending(Conflict):
    code = "eject_pending"
    title = "An eject of this bank is already waiting for the cabinet's answer"


MAINTENANCE_EJECT_S = 15


async def eject_for_maintenance(
    session: AsyncSession, ejects: "EjectService", bank_id: str, reason: str, actor: str
) -> CommandAccepted:
    """Staff take a bank out of its slot to service it; the cabinet's ok puts it in maintenance (held)."""
    bank = await registry.get_bank(session, bank_id, for_update=True)
    if bank is None:
        raise BankNotFound(f"Bank {bank_id} is not registered")
    if bank.cabinet_id is None or bank.slot_no is None or bank.state in ("rented", "lost", "retired"):
        raise NotInCabinet(f"Bank {bank_id} is {bank.state} and in no slot")
    cabinet = await registry.get_cabinet(session, bank.cabinet_id)
    if cabinet is None:
        raise CabinetNotFound(f"Cabinet {bank.cabinet_id} is not registered")
    if not cabinet.online:
        COMMANDS_DOWN.labels("eject", "offline").inc()
        raise DeviceOffline(f"Cabinet {cabinet.id} is offline (last seen {cabinet.last_seen_at})")
    if await registry.has_pending_command(session, bank.id):
        raise EjectPending(f"Bank {bank_id} already has an eject in flight")
    expires = datetime.now(UTC) + timedelta(seconds=MAINTENANCE_EJECT_S)
    command = await ejects.eject_for_maintenance(session, bank, cabinet, reason, actor, expires)
    COMMANDS_DOWN.labels("eject", "sent").inc()
    return CommandAccepted(
        cmd_id=str(command.cmd_id), device_id=cabinet.id, type="eject", expires_at=expires, slot=command.slot
    )


async def _send(downlink: Downlink, device_id: str, msg: Ring | Light) -> None:
    try:
        await downlink.send(device_id, msg)
    except Exception as exc:
        COMMANDS_DOWN.labels(msg.type, "not_sent").inc()
        log.warning("command not sent", extra={"device_id": device_id, "type": msg.type, "error": repr(exc)})
        raise CommandNotSent(f"{msg.type} for {device_id} not sent: broker unavailable") from None
    COMMANDS_DOWN.labels(msg.type, "sent").inc()


async def maintenance_tasks(session: AsyncSession, limit: int = 500) -> list[MaintenanceTask]:
    tasks: list[MaintenanceTask] = []
    for cabinet in await repo.offline_cabinets(session, limit):
        tasks.append(
            MaintenanceTask(
                device_id=cabinet.id,
                device_kind="cabinet",
                task="cabinet offline: check power and network",
                since=cabinet.last_seen_at,
                cabinet_id=cabinet.id,
                lat=cabinet.lat,
                lon=cabinet.lon,
            )
        )
    for slot, lat, lon in await repo.faulty_slots(session, limit):
        tasks.append(
            MaintenanceTask(
                device_id=slot.cabinet_id,
                device_kind="cabinet",
                task=f"slot {slot.slot_no}: {slot.fault}",
                since=slot.updated_at,
                cabinet_id=slot.cabinet_id,
                slot=slot.slot_no,
                lat=lat,
                lon=lon,
            )
        )
    for bank in await fault_reports.reported_banks(session, limit):
        tasks.append(
            MaintenanceTask(
                device_id=bank.id,
                device_kind="bank",
                task="bank reported faulty by a user: check it, then clear its fault reports",
                since=bank.reported_fault_at,
                cabinet_id=bank.cabinet_id,
                slot=bank.slot_no,
                lat=bank.lat,
                lon=bank.lon,
            )
        )
    for bank in await repo.banks_needing_work(session, limit):
        why = "maintenance due" if bank.maintenance_due_at is not None else bank.state
        tasks.append(
            MaintenanceTask(
                device_id=bank.id,
                device_kind="bank",
                task=f"bank {why}: collect and check",
                since=bank.maintenance_due_at or bank.state_changed_at,
                cabinet_id=bank.cabinet_id,
                slot=bank.slot_no,
                lat=bank.lat,
                lon=bank.lon,
            )
        )
    return tasks[:limit]
