"""Messages of banks with their own module (status, heartbeat, bank_report): presence, the
telemetry feed for the data team, the current-state store, and alarms (movement while not rented,
high temperature, maintenance due) with a ring command for a moved bank."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import DeviceAlarmKind, DeviceAlarmRaised, DeviceTelemetryReported, EventData
from contracts.mqtt import BankAlarm, BankReport, Heartbeat, Ring, Status
from device_svc.clock import checked_device_time, datetime_to_ms
from device_svc.metrics import ALARMS_RAISED, COMMANDS_DOWN
from device_svc.models import Bank
from device_svc.mqtt.downlink import Downlink
from device_svc.telemetry.store import BankState, Presence, StateBatcher
from kit.db import after_commit

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


async def raise_alarm(
    session: AsyncSession, publish: Publish, bank_id: str, kind: DeviceAlarmKind, column: str, at: datetime, detail: str
) -> bool:
    """Open an alarm once: sets the bank's `<column>` if it is not set (atomic, so two instances
    cannot both raise it) and emits device.alarm.raised. False when it was already open."""
    stmt = (
        update(Bank)
        .where(Bank.id == bank_id, getattr(Bank, column).is_(None))
        .values({column: at})
        .returning(Bank.id)
        .execution_options(synchronize_session=False)
    )
    if (await session.execute(stmt)).first() is None:
        return False
    ALARMS_RAISED.labels(kind.value).inc()
    log.warning("device alarm", extra={"device_id": bank_id, "kind": kind.value, "detail": detail})
    await publish(session, DeviceAlarmRaised(device_id=bank_id, kind=kind, at=at, detail=detail), bank_id)
    return True


async def clear_alarm(session: AsyncSession, bank_id: str, column: str) -> None:
    stmt = (
        update(Bank)
        .where(Bank.id == bank_id, getattr(Bank, column).is_not(None))
        .values({column: None})
        .execution_options(synchronize_session=False)
    )
    await session.execute(stmt)


class BankDevices:
    def __init__(self, publish: Publish, downlink: Downlink, store: StateBatcher, rules: BankRules) -> None:
        self._publish = publish
        self._downlink = downlink
        self._store = store
        self._rules = rules

    async def handle(
        self, session: AsyncSession, bank: Bank, msg: Status | Heartbeat | BankReport, at: datetime
    ) -> None:
        if isinstance(msg, Status):
            if msg.online:
                await self._set_online(session, bank, True, at)
            elif bank.online:
                await self._set_online(session, bank, False, at)
            return
        if not bank.online:
            await self._set_online(session, bank, True, at)
        if isinstance(msg, Heartbeat):
            self._store.seen(bank.id, Presence(at, msg.rssi_dbm))
            return
        self._store.seen(bank.id, Presence(at))
        await self._report(session, bank, msg, at)

    async def _set_online(self, session: AsyncSession, bank: Bank, online: bool, at: datetime) -> None:
        values: dict[str, object] = {"online": online}
        if online:
            values["last_seen_at"] = at
            values["has_module"] = True
        await session.execute(
            update(Bank).where(Bank.id == bank.id).values(values).execution_options(synchronize_session=False)
        )
        log.info("bank presence", extra={"device_id": bank.id, "online": online})

    async def _report(self, session: AsyncSession, bank: Bank, msg: BankReport, at: datetime) -> None:
        reported_at, adjusted = checked_device_time(
            msg.ts, at, not_before=None, max_skew_s=self._rules.max_clock_skew_s
        )
        position = msg.position
        event = DeviceTelemetryReported(
            device_id=bank.id,
            reported_at=reported_at,
            received_at=at,
            device_kind="bank",
            battery_pct=msg.battery_pct,
            charging=msg.charging,
            lat=position.lat if position else None,
            lon=position.lon if position else None,
            temperature_c=msg.temperature_c,
            charge_cycles=msg.charge_cycles,
            health_pct=msg.health_pct,
            charge_mah_total=msg.charge_mah_total,
            discharge_mah_total=msg.discharge_mah_total,
            moving=msg.moving,
        )
        await self._publish(session, event, bank.id)
        self._store.report(
            bank.id,
            BankState(
                at=reported_at,
                battery_pct=msg.battery_pct,
                charging=msg.charging,
                lat=position.lat if position else None,
                lon=position.lon if position else None,
                position_at=reported_at if position else None,
                temperature_c=msg.temperature_c,
                charge_cycles=msg.charge_cycles,
                health_pct=msg.health_pct,
                charge_mah_total=msg.charge_mah_total,
                discharge_mah_total=msg.discharge_mah_total,
            ),
        )
        if bank.telemetry_at is not None and reported_at <= bank.telemetry_at:
            # A late report: kept in the feed, but it neither changes state nor raises alarms.
            log.info("late bank report", extra={"device_id": bank.id, "clock_adjusted": adjusted})
            return
        await self._alarms(session, bank, msg, at)

    async def _alarms(self, session: AsyncSession, bank: Bank, msg: BankReport, at: datetime) -> None:
        rules = self._rules
        moved = msg.moving or BankAlarm.MOVED in msg.alarms
        if moved and bank.state not in IDLE_EXCLUDED:
            where = f"in {bank.cabinet_id} slot {bank.slot_no}" if bank.cabinet_id else bank.state
            raised = await raise_alarm(
                session,
                self._publish,
                bank.id,
                DeviceAlarmKind.MOVED_WHILE_IDLE,
                "moved_alarm_at",
                at,
                f"moved while not rented ({where})",
            )
            if raised:
                self._ring_after_commit(session, bank.id, at)
        hot = msg.temperature_c is not None and msg.temperature_c >= rules.high_temperature_c
        if hot or BankAlarm.HIGH_TEMPERATURE in msg.alarms:
            await raise_alarm(
                session,
                self._publish,
                bank.id,
                DeviceAlarmKind.HIGH_TEMPERATURE,
                "high_temp_alarm_at",
                at,
                f"temperature {msg.temperature_c} °C",
            )
        elif msg.temperature_c is not None and msg.temperature_c < rules.high_temperature_c - 5:
            await clear_alarm(session, bank.id, "high_temp_alarm_at")
        reason = rules.maintenance_reason(msg.charge_cycles, msg.health_pct)
        if reason is not None:
            await raise_alarm(
                session, self._publish, bank.id, DeviceAlarmKind.MAINTENANCE_DUE, "maintenance_due_at", at, reason
            )

    def _ring_after_commit(self, session: AsyncSession, bank_id: str, at: datetime) -> None:
        ring = Ring(
            cmd_id=str(uuid.uuid4()),
            expires_at=datetime_to_ms(at + timedelta(seconds=30)),
            duration_s=self._rules.ring_duration_s,
        )

        async def send() -> None:
            try:
                await self._downlink.send(bank_id, ring)
                COMMANDS_DOWN.labels("ring", "sent").inc()
            except Exception as exc:
                COMMANDS_DOWN.labels("ring", "not_sent").inc()
                log.warning("ring not sent", extra={"device_id": bank_id, "error": repr(exc)})

        after_commit(session, send)
