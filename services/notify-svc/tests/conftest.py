"""Integration fixtures: the real PostgreSQL database and the real Kafka broker.

Each test session consumes with its own consumer group, first moved to the end of the topics,
so only events produced during the session reach the service."""

import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contracts import Topic
from kit.auth import TokenSigner
from kit.testing import (
    EventBus,
    EventRecorder,
    app_client,
    ensure_database,
    eventually,
    fresh_consumer_group,
    kafka_bootstrap,
    migrate,
    test_database_url,
    truncate_all,
)
from notify_svc.main import create_app
from notify_svc.settings import Settings

SERVICE_DIR = Path(__file__).resolve().parents[1]
TOPICS = [Topic.RENTALS.value, Topic.PAYMENTS.value, Topic.DEVICE_FAULTS.value, Topic.DISPUTES.value]
AUDIENCE_TOPICS = [
    Topic.USERS.value,
    Topic.RENTALS.value,
    Topic.DEVICE_EJECTS.value,
    Topic.DEVICE_RETURNS.value,
    Topic.CREDIT.value,
    Topic.COUPONS.value,
]
PUBLISHED = [
    Topic.TICKETS.value,
    Topic.FAULT_REPORTS.value,
    Topic.NOTICES.value,
    Topic.USER_COMMANDS.value,
    Topic.VAS_CONSENTS.value,
    Topic.ADS.value,
]
ISSUER, AUDIENCE = "pb-user-svc", "pb"


@pytest.fixture(scope="session")
def database_url() -> str:
    return test_database_url("notify")


@pytest.fixture(scope="session")
async def prepared_database(database_url: str) -> str:
    await ensure_database(database_url, recreate=True)
    migrate(SERVICE_DIR, database_url)
    return database_url


@pytest.fixture(scope="session")
async def consumer_group() -> str:
    return await fresh_consumer_group("notify-svc-test", {"events": TOPICS, "audience": AUDIENCE_TOPICS})


@pytest.fixture(scope="session")
def settings(prepared_database: str, keypair: tuple[Path, Path], consumer_group: str) -> Settings:
    return Settings(
        pb_env="test",
        database_url=prepared_database,
        kafka_bootstrap=kafka_bootstrap(),
        kafka_consumer_group=consumer_group,
        jwt_public_key_file=keypair[1],
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        ticket_sla_sweep_interval_s=0.5,
        campaign_batch_size=50,
    )


@pytest.fixture(scope="session")
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """One app (real lifespan: database, producer, consumer) for the session: joining a consumer
    group takes seconds, so it is not repeated per test."""
    app = create_app(settings, telephony_client=_self_client)
    async with app_client(app) as http:
        await eventually(lambda: _ready(http), timeout=60, what="consumers assigned")
        yield http


@pytest.fixture
async def client(settings: Settings, running_app: httpx.AsyncClient) -> httpx.AsyncClient:
    await truncate_all(settings.database_url)
    return running_app


def _self_client(app: Any, _: Settings) -> httpx.AsyncClient:
    """The sandbox telephony provider reports call outcomes to the app under test itself."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify-svc")


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


@pytest.fixture(scope="session")
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap(), enable_idempotence=False, acks="all")
    await prod.start()
    yield prod
    await prod.stop()


@pytest.fixture
def bus(producer: AIOKafkaProducer) -> EventBus:
    return EventBus(producer, "notify-svc-tests")


@pytest.fixture
def auth(signer: TokenSigner) -> Callable[[uuid.UUID], dict[str, str]]:
    def headers(user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {signer.issue(str(user_id))}"}

    return headers


@pytest.fixture
def staff(signer: TokenSigner) -> Callable[..., dict[str, str]]:
    """Headers of an administrator with `roles` (default: support)."""

    def headers(subject: str = "agent-1", roles: tuple[str, ...] = ("support",)) -> dict[str, str]:
        return {"Authorization": f"Bearer {signer.issue(subject, kind='admin', roles=list(roles))}"}

    return headers


@pytest.fixture(scope="session")
async def recorder() -> AsyncIterator[EventRecorder]:
    """Every event notify-svc publishes during the session (tickets, fault reports, notices)."""
    events = EventRecorder(kafka_bootstrap(), PUBLISHED)
    await events.start()
    yield events
    await events.stop()


def _png(width: int = 2, height: int = 1) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"


@pytest.fixture
def png() -> Callable[..., bytes]:
    """A real PNG of the given size (notice images, photos on reports)."""
    return _png


@pytest.fixture
def jpeg() -> bytes:
    return _JPEG


@pytest.fixture
def wait() -> Callable[..., Awaitable[Any]]:
    return eventually
