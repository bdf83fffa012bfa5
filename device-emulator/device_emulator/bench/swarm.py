"""A swarm of lightweight cabinets for the benchmark: each has its own MQTT connection and credentials
(from the fleet file device-svc's provisioning writes), announces itself, answers ejects, reports
returns and sends heartbeats when the swarm's telemetry pacer asks it to.

A swarm cabinet keeps a small slot model as real cabinets do: it starts with the banks the fleet file
places in it, its hello reports every slot (bank and battery; device-svc places the banks, so banks imported
through the admin API become rentable on the first hello), a slot empties when the cabinet answers an eject
`ok` and fills again when a bank is returned into it. It trusts every eject (answers `ok` for the bank and
slot the platform chose) and returns a bank into the slot it came from. That is all the benchmark needs, at
a few hundred bytes per device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.mqtt import (
    Eject,
    EjectResult,
    EjectResultCode,
    Hello,
    ReturnAck,
    ReturnReport,
    SlotState,
    Status,
    UpChannel,
    cmd_topic,
    down_message_adapter,
    up_topic,
)
from kit.mqtt_client import LiteClient, MqttLiteError, Will

log = logging.getLogger("device_emulator.bench.swarm")

_ONLINE = Status(online=True).model_dump_json().encode()
_OFFLINE = Status(online=False).model_dump_json().encode()


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    device_id: str
    password: str
    slot_count: int
    protocol: str = "native"
    # (slot, bank id, battery %) as provisioned: the cabinet starts with these banks and reports them
    banks: tuple[tuple[int, str, int | None], ...] = ()


def read_fleet(path: Path) -> tuple[str, int, list[DeviceCredentials]]:
    """(broker host, broker port, devices) from a fleet file (device_emulator.bench.provision or
    `device_svc.provision seed`)."""
    data = json.loads(path.read_text())
    broker = data.get("broker", {})
    devices = [
        DeviceCredentials(
            c["cabinet_id"],
            c["password"],
            int(c.get("slot_count") or len(c.get("slots", [])) or 8),
            str(c.get("protocol") or "native"),
            tuple(
                (int(s["slot"]), str(s["bank_id"]), _battery(s.get("battery_pct")))
                for s in c.get("slots", [])
                if s.get("bank_id")
            ),
        )
        for c in data["cabinets"]
    ]
    return str(broker.get("host", "127.0.0.1")), int(broker.get("port", 1883)), devices


def _battery(value: Any) -> int | None:
    return int(value) if value is not None else None


def heartbeat_payload(msg_id: str, ts_ms: int, rssi_dbm: int) -> bytes:
    """A protocol-v1 heartbeat, formatted without pydantic (the swarm sends thousands per second)."""
    return b'{"type":"heartbeat","v":1,"msg_id":"%s","ts":%d,"rssi_dbm":%d}' % (msg_id.encode(), ts_ms, rssi_dbm)


@dataclass(slots=True)
class SwarmStats:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    heartbeats_sent: int = 0
    heartbeats_failed: int = 0
    ejects_seen: int = 0
    returns_sent: int = 0
    last_errors: dict[str, int] = field(default_factory=dict)

    def error(self, text: str) -> None:
        key = text[:80]
        self.last_errors[key] = self.last_errors.get(key, 0) + 1


OnEject = Callable[[str, Eject, float], None]


class SwarmDevice:
    # Its heartbeats carry a device time the telemetry watch can match (a volinks heartbeat has none).
    watched = True

    def __init__(self, creds: DeviceCredentials, swarm: Swarm) -> None:
        self.creds = creds
        self.device_id = creds.device_id
        self._swarm = swarm
        self.client: LiteClient | None = None
        self.online = asyncio.Event()
        self._boot = secrets.token_hex(3)
        self._seq = 0
        self._last_ts = 0
        self._acks: dict[str, asyncio.Future[ReturnAck]] = {}
        self._results: dict[str, bytes] = {}
        self.connected_at: float | None = None  # monotonic time of the last successful connect
        self.task: asyncio.Task[None] | None = None
        # slot -> the bank in it (None: empty), and each bank's last known battery
        self.slots: dict[int, str | None] = dict.fromkeys(range(1, creds.slot_count + 1))
        self.slots.update({slot: bank for slot, bank, _ in creds.banks})
        self.battery: dict[str, int | None] = {bank: pct for _, bank, pct in creds.banks}

    def next_msg_id(self) -> str:
        self._seq += 1
        return f"{self._boot}-{self._seq}"

    def next_ts(self) -> int:
        """Device time in ms, strictly increasing per device (so (device, ts) names one heartbeat)."""
        now = int(time.time() * 1000)
        self._last_ts = now if now > self._last_ts else self._last_ts + 1
        return self._last_ts

    async def run(self) -> None:
        swarm = self._swarm
        backoff = swarm.backoff_initial_s
        while not swarm.stopping:
            client = LiteClient(self.device_id, self._on_message)
            try:
                await client.connect(
                    swarm.host,
                    swarm.port,
                    username=self.device_id,
                    password=self.creds.password,
                    keepalive_s=swarm.keepalive_s,
                    will=self.will(),
                    tls=swarm.tls,
                )
                await self.connected(client)
            except (MqttLiteError, OSError, TimeoutError) as exc:
                client.abort()
                swarm.stats.connect_failures += 1
                swarm.stats.error(str(exc) or type(exc).__name__)
            else:
                self.client = client
                self.connected_at = time.monotonic()
                swarm.stats.connects += 1
                swarm.connected += 1
                self.online.set()
                backoff = swarm.backoff_initial_s
                with contextlib.suppress(MqttLiteError):
                    await client.closed
                self.online.clear()
                self.client = None
                swarm.connected -= 1
                if swarm.stopping:
                    return
                swarm.stats.disconnects += 1
            # protocol.md: exponential back-off with jitter (1 s doubling to 60 s, +-50 %)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, swarm.backoff_max_s)

    def will(self) -> Will | None:
        return Will(up_topic(self.device_id, UpChannel.STATUS), _OFFLINE)

    async def connected(self, client: LiteClient) -> None:
        """Subscribe, say online (retained) and announce."""
        await client.subscribe(cmd_topic(self.device_id), qos=1)
        client.publish_nowait(up_topic(self.device_id, UpChannel.STATUS), _ONLINE, retain=True)
        await self.announce(client)

    async def announce(self, client: LiteClient) -> None:
        """What the device sends once connected (after `status`): a cabinet's hello."""
        hello = Hello(
            msg_id=self.next_msg_id(),
            ts=self.next_ts(),
            firmware="bench-1.0",
            slot_count=self.creds.slot_count,
            slots=[
                SlotState(slot=slot, bank_id=bank, battery_pct=self.battery.get(bank) if bank else None)
                for slot, bank in sorted(self.slots.items())
            ],
        )
        await client.publish(up_topic(self.device_id, UpChannel.HELLO), hello.model_dump_json().encode())

    def _on_message(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        try:
            down = down_message_adapter.validate_json(payload)
        except ValidationError:
            self._swarm.stats.error("invalid down message")
            return
        if isinstance(down, ReturnAck):
            fut = self._acks.get(down.ref_msg_id)
            if fut is not None and not fut.done():
                fut.set_result(down)
            return
        if not isinstance(down, Eject):
            return  # other commands (ring, light) need no answer for the benchmark
        self._swarm.stats.ejects_seen += 1
        if self._swarm.on_eject is not None:
            self._swarm.on_eject(self.device_id, down, now)
        asyncio.get_running_loop().call_later(self._swarm.motor_delay_s, self._answer_eject, down)

    def _answer_eject(self, cmd: Eject) -> None:
        payload = self._results.get(cmd.cmd_id)
        if payload is None:
            code = EjectResultCode.OK if self.next_ts() <= cmd.expires_at else EjectResultCode.EXPIRED
            if code == EjectResultCode.EXPIRED and self._swarm.on_expired is not None:
                self._swarm.on_expired(cmd)
            result = EjectResult(
                msg_id=self.next_msg_id(),
                ts=self.next_ts(),
                cmd_id=cmd.cmd_id,
                result=code,
                slot=cmd.slot,
                bank_id=cmd.bank_id,
            )
            payload = result.model_dump_json().encode()
            if code == EjectResultCode.OK and cmd.slot is not None:
                self.slots[cmd.slot] = None
            if len(self._results) > 64:
                self._results.pop(next(iter(self._results)))
            self._results[cmd.cmd_id] = payload
        else:  # a repeated cmd_id: the first answer again under a fresh msg_id
            data = json.loads(payload)
            data["msg_id"] = self.next_msg_id()
            payload = json.dumps(data).encode()
        client = self.client
        if client is not None and client.connected:
            client.publish_nowait(up_topic(self.device_id, UpChannel.EJECT_RESULT), payload)

    def send_heartbeat(self) -> tuple[int, float] | None:
        """Publish one heartbeat (QoS 1, not awaited); returns its (device ts, monotonic send time)."""
        client = self.client
        if client is None or not client.connected:
            return None
        ts = self.next_ts()
        try:
            client.publish_nowait(
                up_topic(self.device_id, UpChannel.HEARTBEAT),
                heartbeat_payload(self.next_msg_id(), ts, random.randint(-95, -50)),
            )
        except MqttLiteError:
            return None
        return ts, time.monotonic()

    async def return_bank(self, bank_id: str, slot: int, battery_pct: int | None = 80) -> tuple[str, float]:
        """Report a return; (msg_id, monotonic time it was published). Re-sends after 10 s without an ack."""
        report = ReturnReport(
            msg_id=self.next_msg_id(), ts=self.next_ts(), slot=slot, bank_id=bank_id, battery_pct=battery_pct
        )
        fut: asyncio.Future[ReturnAck] = asyncio.get_running_loop().create_future()
        self._acks[report.msg_id] = fut
        payload = report.model_dump_json().encode()
        self.slots[slot] = bank_id
        self.battery[bank_id] = battery_pct
        await asyncio.wait_for(self.online.wait(), 30)
        assert self.client is not None
        sent_at = time.monotonic()
        self.client.publish_nowait(up_topic(self.device_id, UpChannel.RETURN), payload)
        self._swarm.stats.returns_sent += 1

        async def resend_until_acked() -> None:
            try:
                for _ in range(5):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(fut), 10)
                        return
                    client = self.client
                    if client is not None and client.connected:
                        client.publish_nowait(up_topic(self.device_id, UpChannel.RETURN), payload)
            finally:
                self._acks.pop(report.msg_id, None)

        self._swarm.spawn(resend_until_acked())
        return report.msg_id, sent_at


class Swarm:
    """`devices` cabinets connecting to host:port at up to `connect_rate` new connections per second."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: list[DeviceCredentials],
        *,
        keepalive_s: int = 60,
        motor_delay_s: float = 0.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        on_eject: OnEject | None = None,
        device_factory: Callable[[DeviceCredentials, Swarm], SwarmDevice] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`device_factory` makes each device (default: a SwarmDevice cabinet); `tls`: every device connects
        with TLS and verifies the broker with that context."""
        self.host = host
        self.port = port
        self.tls = tls
        self.keepalive_s = keepalive_s
        self.motor_delay_s = motor_delay_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_eject = on_eject
        # Told when a device answers an eject `expired` (received after its expires_at): no bank came out.
        self.on_expired: Callable[[Eject], None] | None = None
        self.stats = SwarmStats()
        self.connected = 0
        self.stopping = False
        make = device_factory or SwarmDevice
        self.devices = [make(c, self) for c in devices]
        self.by_id = {d.device_id: d for d in self.devices}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self, connect_rate: float = 500.0) -> None:
        """Start every device, `connect_rate` per second (returns when all are started, not connected)."""
        interval = 1.0 / connect_rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for device in self.devices:
            device.task = self.spawn(device.run())
            next_at += interval
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        self.spawn(self._keepalive())

    async def wait_connected(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.connected < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            await asyncio.sleep(self.keepalive_s / 4)
            idle_before = loop.time() - self.keepalive_s / 2
            for device in self.devices:
                client = device.client
                if client is not None and client.connected and client.last_sent < idle_before:
                    with contextlib.suppress(MqttLiteError):
                        client.ping()

    def online_devices(self) -> list[SwarmDevice]:
        return [d for d in self.devices if d.client is not None and d.client.connected]

    def drop_all(self) -> None:
        """Abort every connection (as a broker restart would); devices reconnect with back-off."""
        for device in self.devices:
            if device.client is not None:
                device.client.abort()

    async def stop(self) -> None:
        """Publish `online: false` (retained) and disconnect gracefully, then end every task."""
        self.stopping = True
        for device in self.devices:
            client = device.client
            if client is not None and client.connected and device.will() is not None:
                with contextlib.suppress(MqttLiteError):
                    client.publish_nowait(up_topic(device.device_id, UpChannel.STATUS), _OFFLINE, retain=True)
        await asyncio.sleep(0.2)
        for device in self.devices:
            if device.client is not None:
                device.client.disconnect()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
