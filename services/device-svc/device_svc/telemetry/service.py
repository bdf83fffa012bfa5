"""Rules for banks with their own module: when a report raises or clears an alarm (movement while
not rented, high temperature, maintenance due), and their presence from `status` messages (the
retained online announcement and the last will). Heartbeats and bank reports are ingested in
batches (`telemetry.ingest`)."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import DeviceAlarmKind, EventData, PresenceReason
from contracts.mqtt import BankAlarm, BankReport, Heartbeat, Status
from device_svc.models import Bank
from device_svc.presence import transition_events

log = logging.getLogger(__name__)

Publish = Callable[[AsyncSession, EventData, str], Awaitable[Envelope]]
BANK_MESSAGES = (Status, Heartbeat, BankReport)
IDLE_EXCLUDED = ("rented", "retired")


@dataclass(frozen=True)
class BankRules:
    high_temperature_c: float = 60.0
    cycle_budget: int = 1000
    cycle_warning_ratio: float = 0.95
    min_health_pct: int = 80
    ring_duration_s: int = 10
    max_clock_skew_s: float = 60.0

    @property
    def cycle_warning(self) -> int:
        return int(self.cycle_budget * self.cycle_warning_ratio)

    def maintenance_reason(self, cycles: int | None, health: int | None) -> str | None:
        if cycles is not None and cycles >= self.cycle_warning:
            return f"{cycles} charge cycles (budget {self.cycle_budget})"
        if health is not None and health < self.min_health_pct:
            return f"battery health {health}% (< {self.min_health_pct}%)"
        return None


@dataclass(frozen=True)
class AlarmRaise:
    kind: DeviceAlarmKind
    column: str
    detail: str


@dataclass
class AlarmChanges:
    raised: list[AlarmRaise] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # columns to reset
    ring: bool = False


def alarm_changes(rules: BankRules, bank: Any, msg: BankReport) -> AlarmChanges:
    """What a (newest) report changes in a bank's open alarms. `bank` has the bank's `state`,
    `cabinet_id`, `slot_no` and alarm columns as they are now; each alarm is raised once until it
    is resolved or cleared."""
    out = AlarmChanges()
    moved = msg.moving or BankAlarm.MOVED in msg.alarms
    if moved and bank.state not in IDLE_EXCLUDED and bank.moved_alarm_at is None:
        where = f"in {bank.cabinet_id} slot {bank.slot_no}" if bank.cabinet_id else bank.state
        out.raised.append(
            AlarmRaise(DeviceAlarmKind.MOVED_WHILE_IDLE, "moved_alarm_at", f"moved while not rented ({where})")
        )
        out.ring = True
    hot = msg.temperature_c is not None and msg.temperature_c >= rules.high_temperature_c
    if hot or BankAlarm.HIGH_TEMPERATURE in msg.alarms:
        if bank.high_temp_alarm_at is None:
            detail = f"temperature {msg.temperature_c} °C"
            out.raised.append(AlarmRaise(DeviceAlarmKind.HIGH_TEMPERATURE, "high_temp_alarm_at", detail))
    elif (
        msg.temperature_c is not None
        and msg.temperature_c < rules.high_temperature_c - 5
        and bank.high_temp_alarm_at is not None
    ):
        out.cleared.append("high_temp_alarm_at")
    reason = rules.maintenance_reason(msg.charge_cycles, msg.health_pct)
    if reason is not None and bank.maintenance_due_at is None:
        out.raised.append(AlarmRaise(DeviceAlarmKind.MAINTENANCE_DUE, "maintenance_due_at", reason))
    return out


class BankDevices:
    """A bank module's `status` (online announcement, last will): presence, once per transition."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    async def handle(self, session: AsyncSession, bank: Bank, msg: Status, at: datetime) -> None:
        reason = PresenceReason.CONNECT if msg.online else PresenceReason.LAST_WILL
        await set_bank_online(session, self._publish, bank.id, msg.online, at, reason)


async def set_bank_online(
    session: AsyncSession, publish: Publish, bank_id: str, online: bool, at: datetime, reason: PresenceReason
) -> bool:
    """Atomic: only the writer that flips `online` emits device.presence.changed (two instances
    handling the same bank's messages cannot both report one transition). True when it flipped."""
    values: dict[str, object] = {"online": online}
    if online:
        values["has_module"] = True
    stmt = (
        update(Bank)
        .where(Bank.id == bank_id, Bank.online.is_not(online))
        .values(values)
        .returning(Bank.last_seen_at, Bank.rssi_dbm)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).first()
    if online:
        await session.execute(
            update(Bank)
            .where(Bank.id == bank_id, (Bank.last_seen_at.is_(None)) | (Bank.last_seen_at < at))
            .values(last_seen_at=at)
            .execution_options(synchronize_session=False)
        )
    if row is None:
        return False
    log.info("bank presence", extra={"device_id": bank_id, "online": online, "reason": reason.value})
    last_seen = row.last_seen_at
    if online:
        last_seen = at if last_seen is None else max(at, last_seen)
    for event in transition_events(
        bank_id, "bank", online=online, reason=reason, at=at, last_seen_at=last_seen, rssi_dbm=row.rssi_dbm
    ):
        await publish(session, event, bank_id)
    return True
