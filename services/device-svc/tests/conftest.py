"""Fixtures: our own Mosquitto (password file + the stack's ACL), the real PostgreSQL and Kafka,
the app in-process, a tap on device-svc's output topics and raw MQTT "cabinets"."""

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr
from sqlalchemy import text

from contracts import Envelope, Topic, event_adapter, new_event
from contracts.events import EjectBank
from contracts.mqtt import UpChannel, cmd_topic, down_message_adapter, up_topic
from device_svc.brokerauth.sync import BrokerAuthSidecar, BrokerPaths
from device_svc.main import create_app
from device_svc.provisioning.mosquitto import mosquitto_hash, write_password_file
from device_svc.provisioning.seed import BrokerTarget, seed
from device_svc.settings import Settings
from kit.db import make_engine, make_sessionmaker
from kit.testing import (
    app_client,
    eventually,
    fresh_consumer_group,
    kafka_bootstrap,
    migrated_database,
    truncate_all,
)
from kit.x509 import BrokerFiles, client_context, ensure_authority, ensure_broker_files

SERVICE_DIR = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SERVICE_PASSWORD = "test-device-svc-" + uuid.uuid4().hex[:8]
# The stack's own ACL (devices write only their protocol channels, read only their commands).
ACL = (Path(__file__).resolve().parents[3] / "deploy" / "local" / "mosquitto" / "acl").read_text()
OUTPUT_TOPICS = [
    Topic.DEVICE_EJECTS,
    Topic.DEVICE_RETURNS,
    Topic.DEVICE_STATUS,
    Topic.DEVICE_TELEMETRY,
    Topic.DEVICE_REJECTIONS,
    Topic.DEVICE_FAULTS,
    Topic.MAINTENANCE,
    Topic.FIRMWARE,
    Topic.DEVICE_SCREENS,
]


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Broker:
    host: str
    port: int
    directory: Path
    password_file: Path
    pidfile: Path
    process: subprocess.Popen[bytes]
    tls_files: BrokerFiles

    @property
    def ca_file(self) -> Path:
        return self.tls_files.ca_cert

    @property
    def tls(self) -> ssl.SSLContext:
        """What every client of the test broker verifies it with."""
        return client_context(self.tls_files.ca_cert)

    async def accepts(self, username: str, password: str) -> bool:
        """Whether the broker lets this device in now (a connect and a clean disconnect, nothing published)."""
        try:
            async with aiomqtt.Client(self.host, self.port, tls_context=self.tls, username=username, password=password):
                return True
        except aiomqtt.MqttError:
            return False

    async def knows(self, fleet: dict[str, Any]) -> None:
        """Wait until the broker has reloaded a seeded fleet's credentials (seeding writes the password file
        and sends SIGHUP; the reload is asynchronous): the last cabinet and the last bank module get in."""
        last = [fleet["cabinets"][-1], *fleet.get("banks", [])[-1:]]
        for device in last:
            user = device.get("bank_id") or device["cabinet_id"]  # a bank's entry names its cabinet too
            await eventually(
                lambda u=user, p=device["password"]: self.accepts(u, p),
                timeout=10,
                interval=0.05,
                what=f"the broker to accept {user}",
            )

    def target(self) -> BrokerTarget:
        return BrokerTarget(
            host=self.host,
            port=self.port,
            ca_file=self.ca_file,
            password_file=self.password_file,
            pidfile=self.pidfile,
            service_user="device-svc",
            service_password=SERVICE_PASSWORD,
        )


def start_mosquitto(directory: Path, port: int, *, persistence: bool = False) -> Broker:
    """A Mosquitto of our own: the service account's password, the stack's ACL, and the broker
    settings device-svc is deployed with (deploy/local/mosquitto/mosquitto.conf.template)."""
    password_file = directory / "passwd"
    if not password_file.exists():
        write_password_file(password_file, {"device-svc": mosquitto_hash(SERVICE_PASSWORD)})
    (directory / "acl").write_text(ACL)
    pidfile = directory / "mosquitto.pid"
    conf = directory / "mosquitto.conf"
    # TLS, as the stacks' broker (deploy/local/mqtt_tls.py): a private CA and a certificate for 127.0.0.1.
    tls = ensure_broker_files(directory / "tls", ["127.0.0.1", "localhost"])
    stored = f"persistence true\npersistence_location {directory}/\n" if persistence else "persistence false\n"
    conf.write_text(
        # `user`: when started as root, mosquitto would otherwise switch to `mosquitto` and lose the files.
        f"user {getpass.getuser()}\nper_listener_settings false\nlistener {port} 127.0.0.1\n"
        f"cafile {tls.ca_cert}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\nallow_anonymous false\n"
        f"password_file {password_file}\nacl_file {directory / 'acl'}\nset_tcp_nodelay true\n"
        f"max_inflight_messages 1000\nmax_queued_messages 200000\n"
        f"{stored}log_dest file {directory / 'mosquitto.log'}\nlog_type all\n"
    )
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pidfile.write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while _free(port):
        if process.poll() is not None or time.monotonic() > deadline:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"mosquitto did not start: {err}")
        time.sleep(0.05)
    return Broker("127.0.0.1", port, directory, password_file, pidfile, process, tls)


def stop_mosquitto(broker: Broker) -> None:
    broker.process.terminate()
    broker.process.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    port = int(os.environ.get("DEVICE_TEST_MQTT_PORT", "0")) or next(p for p in range(18890, 18900) if _free(p))
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"), port)
    yield broker
    stop_mosquitto(broker)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker for one test alone (with persistence, so it can be restarted keeping sessions): the
    session's device-svc, subscribed to every device on the shared test broker, never sees it."""
    broker = start_mosquitto(tmp_path, free_port(), persistence=True)
    try:
        yield broker
    finally:
        if broker.process.poll() is None:
            stop_mosquitto(broker)


@pytest.fixture
def restart_broker() -> Callable[[Broker], None]:
    """Stop a private broker (it saves its sessions) and start it again on the same port."""

    def restart(broker: Broker) -> None:
        stop_mosquitto(broker)
        broker.process = start_mosquitto(broker.directory, broker.port, persistence=True).process

    return restart


@pytest.fixture
def service_password() -> str:
    return SERVICE_PASSWORD


@pytest.fixture(scope="session")
async def database_url() -> str:
    return await migrated_database("device", SERVICE_DIR)


@pytest.fixture(scope="session")
async def consumer_group() -> str:
    """A fresh group whose offsets start at the end: old commands in a shared broker are not replayed."""
    return await make_consumer_group("device-svc-test")


@pytest.fixture
def group_factory() -> Callable[[str], Any]:
    """`await group_factory("prefix")`: another fresh consumer group positioned at the end."""
    return make_consumer_group


async def make_consumer_group(prefix: str) -> str:
    return await fresh_consumer_group(
        prefix,
        {
            "faults": [Topic.FAULT_REPORTS],
            "rentals": [Topic.RENTALS],
            "screens": [Topic.ADS],
            "events": [Topic.DEVICE_COMMANDS],
        },
    )


class EventTap:
    """Reads device-svc's output topics from the moment the session starts."""

    def __init__(self) -> None:
        self.events: list[Envelope] = []
        self.mark = 0  # tests only look at events from `mark` on (set when a test's data is seeded)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap(), enable_auto_commit=False)
        await self._consumer.start()
        parts = []
        for topic in OUTPUT_TOPICS:
            await self._consumer._client.force_metadata_update()
            for p in self._consumer.partitions_for_topic(topic) or {0}:
                parts.append(TopicPartition(topic, p))
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        with contextlib.suppress(Exception):
                            self.events.append(event_adapter.validate_json(record.value))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def matching(self, event_type: str, **fields: Any) -> list[Any]:
        out = []
        for env in self.events[self.mark :]:
            if env.type != event_type:
                continue
            data = env.data
            if all(getattr(data, k) == v for k, v in fields.items()):
                out.append(data)
        return out

    async def wait_for(self, event_type: str, timeout: float = 10.0, **fields: Any) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(event_type, **fields)
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {event_type} with {fields} within {timeout}s")


@pytest.fixture(scope="session")
async def tap() -> AsyncIterator[EventTap]:
    t = EventTap()
    await t.start()
    yield t
    await t.stop()


@pytest.fixture(scope="session")
async def kafka_producer() -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap(), enable_idempotence=False, linger_ms=0)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture(scope="session")
def fleet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet") / "fleet.json"


@pytest.fixture
async def fleet(database_url: str, broker: Broker, fleet_file: Path, tap: EventTap) -> dict[str, Any]:
    """A clean database seeded with 3 cabinets x 8 slots; the broker knows their passwords."""
    await truncate_all(database_url)
    tap.mark = len(tap.events)
    engine = make_engine(database_url, 2)
    try:
        result = await seed(
            make_sessionmaker(engine),
            cabinets=3,
            slots=8,
            fleet_out=fleet_file,
            broker=broker.target(),
            bank_modules=2,  # PB-000001 and PB-000002 (in CAB-0001) have their own module
        )
    finally:
        await engine.dispose()
    await broker.knows(result.fleet)
    return result.fleet


@pytest.fixture
async def broker_auth(database_url: str, broker: Broker, fleet: dict[str, Any]) -> AsyncIterator[BrokerAuthSidecar]:
    """The broker's auth sidecar (python -m device_svc.brokerauth) for one test, on the seeded fleet."""
    engine = make_engine(database_url, 2)
    sidecar = BrokerAuthSidecar(
        engine,
        database_url,
        BrokerPaths(broker.password_file, broker.pidfile),
        broker_id=f"test-broker-{uuid.uuid4().hex[:6]}",
        service_user="device-svc",
        service_password=SERVICE_PASSWORD,
    )
    task = asyncio.create_task(sidecar.run())
    try:

        async def synced() -> bool:
            return sidecar.applied >= 0

        await eventually(synced, timeout=10, interval=0.05, what="the sidecar's first sync")
        yield sidecar
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await engine.dispose()


# Where firmware download links point: test_firmware.py serves the session's app there over real HTTP.
FIRMWARE_HTTP_PORT = free_port()


def device_ca_files(directory: Path) -> tuple[Path, Path]:
    """The device CA for client certificates (certificates/), made once per broker directory."""
    cert, key = directory / "device-ca.crt", directory / "device-ca.key"
    ensure_authority(cert, key, "pb device CA (test)")
    return cert, key


def make_settings(database_url: str, broker: Broker, consumer_group: str, keypair: tuple[Path, Path]) -> Settings:
    device_ca_cert, device_ca_key = device_ca_files(broker.directory)
    return Settings(
        pb_env="test",
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap(),
        kafka_consumer_group=consumer_group,
        jwt_public_key_file=keypair[1],
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_ca_file=broker.ca_file,
        device_ca_cert_file=device_ca_cert,
        device_ca_key_file=device_ca_key,
        mqtt_password=SecretStr(SERVICE_PASSWORD),
        mqtt_client_id=f"device-svc-test-{uuid.uuid4().hex[:8]}",
        mqtt_clean_session=True,
        outbox_poll_interval_s=0.1,
        offline_after_s=60,
        # The night-light schedule runs at start and when staff change a mode (test_night_light.py), not
        # every few minutes: a test cabinet's inbox gets no light command it did not ask for.
        night_light_check_s=3600,
        # Firmware images are signed with the test token key (its public half goes to emulated cabinets).
        firmware_signing_key_file=keypair[0],
        firmware_download_base_url=f"http://127.0.0.1:{FIRMWARE_HTTP_PORT}",
    )


@pytest.fixture(scope="session")
def settings(database_url: str, broker: Broker, consumer_group: str, keypair: tuple[Path, Path]) -> Settings:
    return make_settings(database_url, broker, consumer_group, keypair)


async def wait_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = await client.get("/readyz")
        body = resp.json()
        if resp.status_code == 200:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"device-svc not ready: {body}")


@pytest.fixture(scope="session")
async def running_service(settings: Settings, tap: EventTap) -> AsyncIterator[httpx.AsyncClient]:
    """One device-svc for the session (joining a consumer group takes seconds); tests reseed the data."""
    async with app_client(create_app(settings)) as client:
        await wait_ready(client)
        yield client


@pytest.fixture
async def service(running_service: httpx.AsyncClient, fleet: dict[str, Any]) -> httpx.AsyncClient:
    return running_service


@dataclass
class Cabinet:
    """A raw MQTT client acting as one cabinet."""

    device_id: str
    client: aiomqtt.Client
    inbox: "asyncio.Queue[Any]" = field(default_factory=asyncio.Queue)
    task: "asyncio.Task[None] | None" = None
    seq: int = 0

    def next_id(self) -> str:
        self.seq += 1
        return f"m-{uuid.uuid4().hex[:8]}-{self.seq}"

    async def send(self, channel: Any, message: dict[str, Any] | bytes, *, topic: str | None = None) -> None:
        payload = message if isinstance(message, bytes) else json.dumps(message).encode()
        await self.client.publish(topic or up_topic(self.device_id, UpChannel(channel)), payload, qos=1)

    async def hello(self, fleet_entry: dict[str, Any]) -> None:
        await self.send(
            "hello",
            {
                "type": "hello",
                "msg_id": self.next_id(),
                "ts": now_ms(),
                "firmware": "test-fw",
                "slot_count": fleet_entry["slot_count"],
                "slots": [
                    {k: v for k, v in s.items() if v is not None} | {"slot": s["slot"]} for s in fleet_entry["slots"]
                ],
            },
        )

    async def receive(self, timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(self.inbox.get(), timeout)


def now_ms(offset: timedelta = timedelta()) -> int:
    return int((datetime.now(UTC) + offset).timestamp() * 1000)


@pytest.fixture
async def cabinets(broker: Broker) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Cabinet] = []
    stack = contextlib.AsyncExitStack()

    async def connect(device_id: str, password: str, *, subscribe: bool = True) -> Cabinet:
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            tls_context=broker.tls,
            username=device_id,
            password=password,
            identifier=f"{device_id}-{uuid.uuid4().hex[:6]}",
        )
        await stack.enter_async_context(client)
        cab = Cabinet(device_id, client)
        if subscribe:
            await client.subscribe(cmd_topic(device_id), qos=1)

            async def pump() -> None:
                async for message in client.messages:
                    payload = message.payload
                    assert isinstance(payload, bytes)
                    await cab.inbox.put(down_message_adapter.validate_json(payload))

            cab.task = asyncio.create_task(pump())
        opened.append(cab)
        return cab

    yield connect
    for cab in opened:
        if cab.task is not None:
            cab.task.cancel()
            with contextlib.suppress(BaseException):
                await cab.task
    await stack.aclose()


async def send_eject(
    producer: AIOKafkaProducer,
    code: str,
    *,
    deadline_s: float = 5.0,
    command_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
) -> EjectBank:
    cmd = EjectBank(
        command_id=command_id or uuid.uuid4(),
        rental_id=uuid.uuid4(),
        user_id=user_id or uuid.uuid4(),
        code=code,
        deadline=datetime.now(UTC) + timedelta(seconds=deadline_s),
    )
    env = new_event(cmd, key=code, producer="test")
    await producer.send_and_wait(Topic.DEVICE_COMMANDS, env.to_bytes(), key=code.encode())
    return cmd


@pytest.fixture
def clock() -> Callable[..., int]:
    """Device time in epoch ms, optionally offset: `clock()` or `clock(timedelta(days=1))`."""
    return now_ms


@pytest.fixture
def eject(kafka_producer: AIOKafkaProducer) -> Callable[..., Any]:
    """Produce an EjectBank command to device.commands.v1, as billing would."""

    async def produce(code: str, **kwargs: Any) -> EjectBank:
        return await send_eject(kafka_producer, code, **kwargs)

    return produce


@pytest.fixture
def online(cabinets: Callable[..., Any], fleet: dict[str, Any], tap: EventTap) -> Callable[..., Any]:
    """Connect a cabinet with its fleet password, say hello, and wait until device-svc has it online."""

    async def bring_online(cabinet_id: str) -> Cabinet:
        entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == cabinet_id)
        cab: Cabinet = await cabinets(cabinet_id, entry["password"])
        await cab.hello(entry)
        await tap.wait_for("device.cabinet.status_changed", cabinet_id=cabinet_id, online=True)
        return cab

    return bring_online


@pytest.fixture
async def service_account(cabinets: Callable[..., Any]) -> Cabinet:
    """An MQTT client logged in as device-svc itself (allowed on every device topic)."""
    cab: Cabinet = await cabinets("device-svc", SERVICE_PASSWORD, subscribe=False)
    return cab


@pytest.fixture
def bank_device(cabinets: Callable[..., Any], fleet: dict[str, Any]) -> Callable[..., Any]:
    """Connect a bank with its own module (its fleet password), subscribed to its command topic."""

    async def connect(bank_id: str) -> Cabinet:
        entry = next(b for b in fleet["banks"] if b["bank_id"] == bank_id)
        device: Cabinet = await cabinets(bank_id, entry["password"])
        return device

    return connect


@pytest.fixture
def settings_factory(database_url: str, broker: Broker, keypair: tuple[Path, Path]) -> Callable[[str], Settings]:
    """Settings for another device-svc instance (its own Kafka consumer group)."""
    return lambda group: make_settings(database_url, broker, group, keypair)


@pytest.fixture
def readiness() -> Callable[..., Any]:
    return wait_ready


@pytest.fixture
def truncate() -> Callable[[str], Any]:
    return truncate_all


@contextlib.asynccontextmanager
async def cabinet_rows_locked(database_url: str, cabinet_ids: list[str]) -> AsyncIterator[None]:
    """Holds the cabinets' row locks: device-svc's handling of their next messages waits, uncommitted."""
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            query = text("SELECT id FROM cabinets WHERE id = ANY(:ids) ORDER BY id FOR UPDATE")
            await conn.execute(query, {"ids": cabinet_ids})
            try:
                yield
            finally:
                await conn.rollback()
    finally:
        await engine.dispose()


async def count_lock_waiters(database_url: str) -> int:
    """Sessions of this database waiting for a lock (e.g. a message's handling on a locked cabinet)."""
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return int((await conn.execute(text(query))).scalar_one())
    finally:
        await engine.dispose()


@pytest.fixture
def lock_cabinets(database_url: str) -> Callable[..., Any]:
    """`async with lock_cabinets("CAB-0001", ...)`: hold those cabinets' row locks."""
    return lambda *cabinet_ids: cabinet_rows_locked(database_url, list(cabinet_ids))


@pytest.fixture
def lock_waiters(database_url: str) -> Callable[[], Any]:
    """`await lock_waiters()`: how many sessions wait for a lock."""
    return lambda: count_lock_waiters(database_url)
