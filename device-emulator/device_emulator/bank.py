"""One emulated power bank with its own cellular module, speaking protocol v1 (bank_report, heartbeat,
status; commands: ring) over MQTT with its own credentials.

The bank reports on connect, every `report_s` and at once when it is moved or overheats; it heartbeats
every `heartbeat_s`. Faults: offline (abrupt, last will), lost messages, duplicated messages (same
msg_id, as a QoS 1 redelivery), delayed messages (arrive after newer ones), a skewed clock, low
battery, high temperature, an aged battery. Everything random comes from `rng`, so a scenario run
from a seed makes the same reports (message ids excepted: they are unique per boot).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import socket
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
    Status,
    UpChannel,
    cmd_topic,
    down_message_adapter,
    up_topic,
)
from device_emulator.aio import cancel_and_wait

log = logging.getLogger("device_emulator.bank")

_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
_ONLINE = Status(online=True).model_dump_json().encode()
_OFFLINE = Status(online=False).model_dump_json().encode()
HIGH_TEMPERATURE_C = 60.0


@dataclass(slots=True)
class BankFaults:
    """`drop_messages`: up messages are lost (never sent); `duplicate`: each is sent this many times
    with the same msg_id; `delay_s`: each is sent this late (newer ones overtake it)."""

    drop_messages: bool = False
    duplicate: int = 1
    delay_s: float = 0.0


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


class BankModule:
    """An emulated bank with a module. `start()` runs it in the background until `stop()`."""

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
    ) -> None:
        self.bank_id = bank_id
        self.password = password
        self.host = host
        self.port = port
        self.capacity_mah = capacity_mah
        self.clock_skew_ms = clock_skew_ms
        self.report_s = report_s
        self.heartbeat_s = heartbeat_s
        self.keepalive_s = keepalive_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.faults = faults or BankFaults()
        self.status = BankStatus(
            battery_pct=battery_pct, lat=lat, lon=lon, charge_cycles=charge_cycles, health_pct=health_pct
        )
        self._rng = rng or random.Random()
        self.rings: list[Ring] = []
        self.sent: list[BankReport | Heartbeat] = []  # every up message decided (sent, dropped or delayed)
        self.stats: dict[str, int] = {"connects": 0, "reports": 0, "heartbeats": 0, "dropped": 0, "rings": 0}
        self.last_error: str | None = None
        self._boot = secrets.token_hex(4)  # never from the seed: a restarted device must not repeat msg_ids
        self._seq = itertools.count(1)
        self._client: aiomqtt.Client | None = None
        self._online = asyncio.Event()
        self._offline = asyncio.Event()
        self._offline.set()
        self._want_online = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._delayed: set[asyncio.Task[None]] = set()
        self._ringing_until = 0.0

    # ------------------------------------------------------------------ views

    def device_now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_skew_ms

    def new_msg_id(self) -> str:
        return f"{self._boot}-{next(self._seq)}"

    @property
    def online(self) -> bool:
        return self._online.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

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
        if drop_messages is not None:
            self.faults.drop_messages = drop_messages
        if duplicate is not None:
            self.faults.duplicate = max(1, duplicate)
        if delay_s is not None:
            self.faults.delay_s = max(0.0, delay_s)
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

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._want_online.set()
        self._task = asyncio.create_task(self._run(), name=f"bank:{self.bank_id}")

    async def wait_online(self, timeout_s: float = 10.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._online.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None and self.online:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(up_topic(self.bank_id, UpChannel.STATUS), _OFFLINE, qos=1, retain=True, timeout=2)
        for pending in list(self._delayed):
            await cancel_and_wait(pending)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self._online.clear()
        self._offline.set()

    async def go_offline(self, timeout_s: float = 5.0) -> None:
        """Lose the connection abruptly (the broker publishes the last will); stay offline until go_online()."""
        self._want_online.clear()
        client = self._client
        sock = client._client.socket() if client is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._offline.wait()

    async def go_online(self, *, wait: bool = True, timeout_s: float = 10.0) -> bool:
        self._want_online.set()
        if not self.running:
            await self.start()
        return await self.wait_online(timeout_s) if wait else self.online

    async def _run(self) -> None:
        backoff = self.backoff_initial_s
        while not self._stopping:
            await self._want_online.wait()
            try:
                await self._session()
                backoff = self.backoff_initial_s
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.warning(
                    "bank connection lost or refused", extra={"bank_id": self.bank_id, "error": self.last_error}
                )
            except Exception as exc:  # a bug must not kill one device silently in a swarm
                self.last_error = repr(exc)
                log.exception("bank task error", extra={"bank_id": self.bank_id})
            finally:
                self._client = None
                self._online.clear()
                self._offline.set()
            if self._stopping:
                break
            if self._want_online.is_set():
                await asyncio.sleep(backoff * self._rng.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.backoff_max_s)

    async def _session(self) -> None:
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.bank_id,
            password=self.password,
            identifier=self.bank_id,
            will=aiomqtt.Will(up_topic(self.bank_id, UpChannel.STATUS), _OFFLINE, qos=1, retain=True),
            keepalive=self.keepalive_s,
            socket_options=[_NODELAY],
        )
        async with client:
            self._client = client
            self._offline.clear()
            await client.subscribe(cmd_topic(self.bank_id), qos=1)
            await client.publish(up_topic(self.bank_id, UpChannel.STATUS), _ONLINE, qos=1, retain=True)
            await self._publish(client, self._make_report(moving=False))
            self._online.set()
            self.stats["connects"] += 1
            self.last_error = None
            await self._serve(client)

    async def _serve(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time() + self.heartbeat_s
        next_report = loop.time() + self.report_s
        messages = client.messages
        receive: asyncio.Future[aiomqtt.Message] | None = None
        try:
            while True:
                if receive is None:
                    receive = asyncio.ensure_future(anext(messages))
                wait_s = min(next_heartbeat, next_report) - loop.time()
                if wait_s > 0:
                    await asyncio.wait((receive,), timeout=wait_s)
                if receive.done():
                    message = receive.result()
                    receive = None
                    self._on_message(message)
                now = loop.time()
                if now >= next_heartbeat:
                    next_heartbeat = now + self.heartbeat_s
                    beat = Heartbeat(
                        msg_id=self.new_msg_id(), ts=self.device_now_ms(), rssi_dbm=self._rng.randint(-110, -60)
                    )
                    self.stats["heartbeats"] += 1
                    await self._publish(client, beat)
                if now >= next_report:
                    next_report = now + self.report_s
                    await self._publish(client, self._make_report(moving=False))
        finally:
            if receive is not None and not receive.done():
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await receive

    def _on_message(self, message: aiomqtt.Message) -> None:
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
        if self.faults.drop_messages:
            self.stats["dropped"] += 1
            return
        if self.faults.delay_s > 0:
            task = asyncio.create_task(self._send_later(client, msg, self.faults.delay_s, self.faults.duplicate))
            self._delayed.add(task)
            task.add_done_callback(self._delayed.discard)
            return
        await self._send(client, msg, self.faults.duplicate)

    async def _send_later(
        self, client: aiomqtt.Client, msg: BankReport | Heartbeat, delay_s: float, times: int
    ) -> None:
        await asyncio.sleep(delay_s)
        with contextlib.suppress(aiomqtt.MqttError):
            await self._send(client, msg, times)

    async def _send(self, client: aiomqtt.Client, msg: BankReport | Heartbeat, times: int) -> None:
        payload = msg.model_dump_json().encode()
        for _ in range(times):
            await client.publish(up_topic(self.bank_id, UpChannel(msg.type)), payload, qos=1)
