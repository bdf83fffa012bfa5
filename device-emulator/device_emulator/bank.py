"""One emulated power bank with its own cellular module, speaking protocol v1 (bank_report, heartbeat,
status; commands: ring) over MQTT with its own credentials.

The bank reports on connect, every `report_s` and at once when it is moved or overheats; it heartbeats
every `heartbeat_s`. Its connection lifecycle is `device.Device`'s. Faults: offline (abrupt, last
will), the generic lost, duplicated (same msg_id, as a QoS 1 redelivery) and delayed (arrive after
newer ones) messages, a skewed clock, low battery, high temperature, an aged battery. Everything
random comes from `rng`, so a scenario run from a seed makes the same reports (message ids excepted:
they are unique per boot).
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiomqtt
from pydantic import ValidationError

from contracts.mqtt import (
    BankAlarm,
    BankReport,
    Heartbeat,
    Position,
    Ring,
    down_message_adapter,
)
from device_emulator.device import Device, MessageFaults

log = logging.getLogger("device_emulator.bank")

HIGH_TEMPERATURE_C = 60.0

BankFaults = MessageFaults  # a bank module has only the generic message faults


@dataclass(slots=True)
class BankStatus:
    battery_pct: int = 90
    charging: bool = False
    lat: float | None = None
    lon: float | None = None
    temperature_c: float = 25.0
    charge_cycles: int = 0
    health_pct: int = 100
    charge_mah_total: int = 0
    discharge_mah_total: int = 0


class BankModule(Device):
    """An emulated bank with a module. `start()` runs it in the background until `stop()`."""

    kind = "bank"

    def __init__(
        self,
        bank_id: str,
        password: str,
        host: str,
        port: int,
        *,
        lat: float | None = None,
        lon: float | None = None,
        battery_pct: int = 90,
        charge_cycles: int = 0,
        health_pct: int = 100,
        capacity_mah: int = 5000,
        clock_skew_ms: int = 0,
        report_s: float = 600.0,
        heartbeat_s: float = 300.0,
        keepalive_s: int = 60,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        faults: BankFaults | None = None,
        rng: random.Random | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            bank_id,
            password,
            host,
            port,
            clock_skew_ms=clock_skew_ms,
            keepalive_s=keepalive_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            rng=rng,
            tls=tls,
        )
        self.capacity_mah = capacity_mah
        self.report_s = report_s
        self.heartbeat_s = heartbeat_s
        self.faults = faults or BankFaults()
        self.status = BankStatus(
            battery_pct=battery_pct, lat=lat, lon=lon, charge_cycles=charge_cycles, health_pct=health_pct
        )
        self.rings: list[Ring] = []
        self.sent: list[BankReport | Heartbeat] = []  # every up message decided (sent, dropped or delayed)
        self.stats |= {"reports": 0, "heartbeats": 0, "rings": 0}
        self._ringing_until = 0.0
        self._next_heartbeat = 0.0
        self._next_report = 0.0

    # ------------------------------------------------------------------ views

    @property
    def bank_id(self) -> str:
        return self.device_id

    @property
    def ringing(self) -> bool:
        return time.monotonic() < self._ringing_until

    def describe(self) -> dict[str, Any]:
        return {
            "bank_id": self.bank_id,
            "online": self.online,
            "ringing": self.ringing,
            "clock_skew_ms": self.clock_skew_ms,
            "faults": asdict(self.faults),
            "status": asdict(self.status),
            "rings": len(self.rings),
            "last_error": self.last_error,
            "stats": dict(self.stats),
        }

    def set_faults(
        self,
        *,
        drop_messages: bool | None = None,
        duplicate: int | None = None,
        delay_s: float | None = None,
        clock_skew_ms: int | None = None,
        battery_pct: int | None = None,
        temperature_c: float | None = None,
        charge_cycles: int | None = None,
        health_pct: int | None = None,
    ) -> None:
        self.faults.set(drop_messages=drop_messages, duplicate=duplicate, delay_s=delay_s)
        if clock_skew_ms is not None:
            self.clock_skew_ms = clock_skew_ms
        if battery_pct is not None:
            self.status.battery_pct = battery_pct
        if temperature_c is not None:
            self.status.temperature_c = temperature_c
        if charge_cycles is not None:
            self.status.charge_cycles = charge_cycles
        if health_pct is not None:
            self.status.health_pct = health_pct

    # ------------------------------------------------------------------ the battery

    def use(self, pct: int) -> None:
        """Deliver `pct` % of the capacity (a phone charged from the bank)."""
        pct = max(0, min(pct, self.status.battery_pct))
        self.status.battery_pct -= pct
        self.status.discharge_mah_total += self.capacity_mah * pct // 100
        self.status.charging = False

    def charge(self, pct: int) -> None:
        """Charge by `pct` % in a cabinet; every 100 % charged in counts one cycle."""
        pct = max(0, min(pct, 100 - self.status.battery_pct))
        before = self.status.charge_mah_total
        self.status.battery_pct += pct
        self.status.charge_mah_total += self.capacity_mah * pct // 100
        self.status.charging = self.status.battery_pct < 100
        self.status.charge_cycles += (self.status.charge_mah_total // self.capacity_mah) - (before // self.capacity_mah)

    # ------------------------------------------------------------------ connection (see Device)

    async def _hello(self, client: aiomqtt.Client) -> None:
        await self._publish(client, self._make_report(moving=False))

    def _tick_start(self, now: float) -> float:
        self._next_heartbeat = now + self.heartbeat_s
        self._next_report = now + self.report_s
        return min(self._next_heartbeat, self._next_report)

    async def _tick(self, client: aiomqtt.Client, now: float) -> float:
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_s
            beat = Heartbeat(msg_id=self.new_msg_id(), ts=self.device_now_ms(), rssi_dbm=self._rng.randint(-110, -60))
            self.stats["heartbeats"] += 1
            await self._publish(client, beat)
        if now >= self._next_report:
            self._next_report = now + self.report_s
            await self._publish(client, self._make_report(moving=False))
        return min(self._next_heartbeat, self._next_report)

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        payload = message.payload
        try:
            if not isinstance(payload, str | bytes | bytearray):
                raise TypeError(type(payload).__name__)
            down = down_message_adapter.validate_json(payload)
        except (ValidationError, TypeError) as exc:
            log.warning("invalid down message", extra={"bank_id": self.bank_id, "error": str(exc)[:200]})
            return
        if isinstance(down, Ring):
            if self.device_now_ms() > down.expires_at:
                log.info("ring expired", extra={"bank_id": self.bank_id, "cmd_id": down.cmd_id})
                return
            self.rings.append(down)
            self.stats["rings"] += 1
            self._ringing_until = time.monotonic() + down.duration_s
            log.info("ringing", extra={"bank_id": self.bank_id, "duration_s": down.duration_s})

    # ------------------------------------------------------------------ reports

    def _make_report(self, *, moving: bool) -> BankReport:
        s = self.status
        alarms = []
        if moving:
            alarms.append(BankAlarm.MOVED)
        if s.temperature_c >= HIGH_TEMPERATURE_C:
            alarms.append(BankAlarm.HIGH_TEMPERATURE)
        if s.battery_pct < 20:
            alarms.append(BankAlarm.LOW_BATTERY)
        position = None
        if s.lat is not None and s.lon is not None:
            position = Position(lat=s.lat, lon=s.lon, accuracy_m=self._rng.randint(5, 50))
        self.stats["reports"] += 1
        return BankReport(
            msg_id=self.new_msg_id(),
            ts=self.device_now_ms(),
            position=position,
            battery_pct=s.battery_pct,
            charging=s.charging,
            charge_mah_total=s.charge_mah_total,
            discharge_mah_total=s.discharge_mah_total,
            charge_cycles=s.charge_cycles,
            health_pct=s.health_pct,
            temperature_c=round(s.temperature_c, 1),
            moving=moving,
            alarms=alarms,
        )

    async def report(self, *, moving: bool = False) -> str:
        """Publish a bank_report now (lost while offline: a bank keeps no backlog). Returns its msg_id."""
        msg = self._make_report(moving=moving)
        client = self._client
        if client is not None and self.online:
            await self._publish(client, msg)
        return msg.msg_id

    async def move_to(self, lat: float, lon: float) -> str:
        """The accelerometer saw movement: report at once with the new position."""
        self.status.lat, self.status.lon = lat, lon
        return await self.report(moving=True)

    async def _publish(self, client: aiomqtt.Client, msg: BankReport | Heartbeat) -> None:
        self.sent.append(msg)
        await self._publish_up(client, msg)
