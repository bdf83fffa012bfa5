"""Fixtures: our own mosquitto (password file + the project's ACL) and a raw aiomqtt client playing device-svc."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from contracts.mqtt import (
    Eject,
    ReturnAck,
    ReturnAckResult,
    UpChannel,
    cmd_topic,
    parse_up_topic,
    up_message_adapter,
)
from device_emulator import Cabinet
from device_emulator.aio import cancel_and_wait

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
PORTS = range(18880, 18890)
SVC_USER, SVC_PASSWORD = "device-svc", "svc-secret"
CABINET_POOL = [f"EMU-{n:03d}" for n in range(1, 61)]
ACL = """user device-svc
topic readwrite pb/v1/devices/#
pattern write pb/v1/devices/%u/up/#
pattern read pb/v1/devices/%u/cmd/#
"""


def cabinet_password(cabinet_id: str) -> str:
    return f"pw-{cabinet_id}"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mosquitto does: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Broker:
    host: str
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def start(self) -> None:
        """(Re)start on `self.port`; raises if it does not come up."""
        log = (self.directory / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")], stdout=log, stderr=log)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.directory / 'mosquitto.log').read_text()[-2000:]}")
            if _port_open(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not open its port")


def make_broker(directory: Path, users: dict[str, str]) -> Broker:
    directory.mkdir(parents=True, exist_ok=True)
    passwd = directory / "passwd"
    passwd.write_text("")
    for user, password in users.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True, capture_output=True)
    (directory / "acl").write_text(ACL)
    for port in PORTS:
        if not _port_free(port):
            continue
        user_line = "user root" if os.geteuid() == 0 else ""
        (directory / "mosquitto.conf").write_text(
            f"""per_listener_settings false
listener {port} 127.0.0.1
allow_anonymous false
password_file {passwd}
acl_file {directory / "acl"}
persistence false
set_tcp_nodelay true
{user_line}
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages true
"""
        )
        broker = Broker("127.0.0.1", port, directory)
        try:
            broker.start()
        except RuntimeError:
            broker.stop()
            continue  # lost a race for the port: try the next one
        return broker
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} for mosquitto")


ALL_USERS = {SVC_USER: SVC_PASSWORD, **{c: cabinet_password(c) for c in CABINET_POOL}}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = make_broker(tmp_path_factory.mktemp("mosquitto"), ALL_USERS)
    yield b
    b.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[[], Broker]]:
    """A private broker for a test that needs to stop and restart it."""
    made: list[Broker] = []

    def factory() -> Broker:
        b = make_broker(tmp_path / f"mosquitto-{len(made)}", ALL_USERS)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.stop()


_pool = itertools.count()


@pytest.fixture
def new_cabinet_id() -> Callable[[], str]:
    """A cabinet id no other test used (so retained messages from other tests cannot interfere)."""

    def take() -> str:
        return CABINET_POOL[next(_pool)]

    return take


@dataclass
class Received:
    cabinet_id: str
    channel: str
    retain: bool
    raw: bytes
    msg: Any


@dataclass
class DeviceSvc:
    """A raw aiomqtt client logged in as device-svc: watches up topics, sends commands and acks."""

    client: aiomqtt.Client
    received: list[Received] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    auto_ack: ReturnAckResult | None = None

    async def pump(self) -> None:
        async for message in self.client.messages:
            parsed = parse_up_topic(str(message.topic))
            assert parsed is not None, message.topic
            raw = message.payload
            assert isinstance(raw, bytes | bytearray)
            msg = up_message_adapter.validate_json(raw)
            item = Received(parsed[0], parsed[1], bool(message.retain), bytes(raw), msg)
            self.received.append(item)
            if self.auto_ack is not None and item.channel == UpChannel.RETURN:
                await self.ack_return(item.cabinet_id, msg.msg_id, self.auto_ack)
            async with self.changed:
                self.changed.notify_all()

    def of(self, cabinet_id: str, channel: UpChannel) -> list[Received]:
        return [r for r in self.received if r.cabinet_id == cabinet_id and r.channel == channel.value]

    async def wait_for(
        self,
        cabinet_id: str,
        channel: UpChannel,
        predicate: Callable[[Any], bool] = lambda _m: True,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[Received]:
        def matching() -> list[Received]:
            return [r for r in self.of(cabinet_id, channel) if predicate(r.msg)]

        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def eject(
        self,
        cabinet_id: str,
        cmd_id: str,
        *,
        bank_id: str | None = None,
        slot: int | None = None,
        ttl_ms: int = 30_000,
        expires_at: int | None = None,
    ) -> Eject:
        now = int(time.time() * 1000)
        cmd = Eject(
            cmd_id=cmd_id,
            issued_at=now,
            expires_at=expires_at if expires_at is not None else now + ttl_ms,
            bank_id=bank_id,
            slot=slot,
        )
        await self.client.publish(cmd_topic(cabinet_id), cmd.model_dump_json(), qos=1)
        return cmd

    async def ack_return(self, cabinet_id: str, msg_id: str, result: ReturnAckResult = ReturnAckResult.OK) -> None:
        ack = ReturnAck(ref_msg_id=msg_id, result=result)
        await self.client.publish(cmd_topic(cabinet_id), ack.model_dump_json(), qos=1)


@contextlib.asynccontextmanager
async def device_svc_session(broker: Broker, topic: str) -> AsyncIterator[DeviceSvc]:
    async with aiomqtt.Client(broker.host, broker.port, username=SVC_USER, password=SVC_PASSWORD) as client:
        svc = DeviceSvc(client)
        await client.subscribe(topic, qos=1)
        task = asyncio.create_task(svc.pump())
        try:
            yield svc
        finally:
            await cancel_and_wait(task)


@pytest.fixture
def svc_session(broker: Broker) -> Callable[..., contextlib.AbstractAsyncContextManager[DeviceSvc]]:
    """`async with svc_session(cabinet_id) as svc:` -- device-svc watching that cabinet's up topics."""

    def open_session(
        cabinet_id: str = "+", on: Broker | None = None
    ) -> contextlib.AbstractAsyncContextManager[DeviceSvc]:
        return device_svc_session(on or broker, f"pb/v1/devices/{cabinet_id}/up/#")

    return open_session


SLOTS = [
    {"slot": 1, "bank_id": "PB-{cab}-1", "battery_pct": 95},
    {"slot": 2, "bank_id": "PB-{cab}-2", "battery_pct": 40},
    {"slot": 3, "bank_id": None, "battery_pct": None},
]


@pytest.fixture
async def make_cabinet(broker: Broker, new_cabinet_id: Callable[[], str]) -> AsyncIterator[Callable[..., Cabinet]]:
    """Builds a cabinet on the session broker with slots 1-2 holding `PB-<id>-1/2` and slot 3 empty, slot_count 4;
    every cabinet made is stopped after the test."""
    made: list[Cabinet] = []

    def build(**options: Any) -> Cabinet:
        cab_id = options.pop("cabinet_id", None) or new_cabinet_id()
        on: Broker = options.pop("on", broker)
        slots = [{**s, "bank_id": s["bank_id"].format(cab=cab_id) if s["bank_id"] else None} for s in SLOTS]
        options.setdefault("slot_count", 4)
        options.setdefault("backoff_initial_s", 0.05)
        options.setdefault("backoff_max_s", 0.5)
        cab = Cabinet(cab_id, options.pop("password", cabinet_password(cab_id)), on.host, on.port, slots, **options)
        made.append(cab)
        return cab

    yield build
    await asyncio.gather(*(cab.stop() for cab in made if cab.running))


@pytest.fixture
def write_fleet(broker: Broker) -> Callable[[Path, list[str]], Path]:
    """Writes a fleet.json like device-svc's seeder does: slots 1-2 hold PB-<id>-1/2, slot 8 listed empty."""

    def write(path: Path, ids: list[str]) -> Path:
        cabinets = [
            {
                "cabinet_id": cab_id,
                "password": cabinet_password(cab_id),
                "lat": 31.23 + n / 100,
                "lon": 121.47,
                "slot_count": 8,
                "firmware": "seed-1.2",
                "slots": [
                    {"slot": 1, "bank_id": f"PB-{cab_id}-1", "battery_pct": 95},
                    {"slot": 2, "bank_id": f"PB-{cab_id}-2", "battery_pct": 60},
                    {"slot": 8, "bank_id": None, "battery_pct": None},
                ],
            }
            for n, cab_id in enumerate(ids)
        ]
        path.write_text(json.dumps({"broker": {"host": broker.host, "port": broker.port}, "cabinets": cabinets}))
        return path

    return write
