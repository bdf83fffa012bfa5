"""Integration fixtures: the real PostgreSQL database and the real Kafka broker.

Each test session consumes with its own consumer group, first moved to the end of the topics,
so only events produced during the session reach the service."""

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from analytics_svc.main import create_app
from analytics_svc.settings import Settings
from contracts import Envelope, Topic
from kit.auth import TokenSigner
from kit.testing import (
    EventBus,
    app_client,
    ensure_database,
    eventually,
    kafka_bootstrap,
    migrate,
    move_group_to_end,
    test_database_url,
    truncate_all,
    write_keypair,
)

SERVICE_DIR = Path(__file__).resolve().parents[1]
TOPICS = [Topic.RENTALS.value, Topic.USERS.value, Topic.DEVICE_RETURNS.value]
ISSUER, AUDIENCE = "pb-user-svc", "pb"


@pytest.fixture(scope="session")
def database_url() -> str:
    return test_database_url("analytics")


@pytest.fixture(scope="session")
async def prepared_database(database_url: str) -> str:
    await ensure_database(database_url, recreate=True)
    migrate(SERVICE_DIR, database_url)
    return database_url


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def signer(keypair: tuple[Path, Path]) -> TokenSigner:
    return TokenSigner.from_file(keypair[0], ISSUER, AUDIENCE)


@pytest.fixture(scope="session")
async def consumer_group() -> str:
    group = f"analytics-svc-test-{uuid.uuid4().hex[:8]}"
    # The kit names the group `<consumer_group>.<spec name>`; the spec is named `events`.
    await move_group_to_end(kafka_bootstrap(), f"{group}.events", TOPICS)
    return group


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
    )


@pytest.fixture(scope="session")
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """One app (real lifespan: database, producer, consumer) for the session: joining a consumer
    group takes seconds, so it is not repeated per test."""
    async with app_client(create_app(settings)) as http:
        await eventually(lambda: _ready(http), timeout=60, what="consumers assigned")
        yield http


@pytest.fixture
async def client(settings: Settings, running_app: httpx.AsyncClient) -> httpx.AsyncClient:
    await truncate_all(settings.database_url)
    return running_app


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
    return EventBus(producer, "analytics-svc-tests")


@pytest.fixture
def auth(signer: TokenSigner) -> Callable[[uuid.UUID], dict[str, str]]:
    def headers(user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {signer.issue(str(user_id))}"}

    return headers


@pytest.fixture
def wait() -> Callable[..., Awaitable[Any]]:
    return eventually


@pytest.fixture
def admin(signer: TokenSigner) -> Callable[..., dict[str, str]]:
    def headers(*roles: str, kind: str = "admin") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {signer.issue('staff-' + uuid.uuid4().hex[:6], kind=kind, roles=list(roles))}"
        }

    return headers


@pytest.fixture(scope="session")
async def db(prepared_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(prepared_database)
    yield engine
    await engine.dispose()


@pytest.fixture
def processed(db: AsyncEngine) -> Callable[[list[Envelope]], Awaitable[Any]]:
    """Wait until the service's consumer has recorded every one of these events."""

    async def wait_for(envelopes: list[Envelope]) -> None:
        ids = list({e.event_id for e in envelopes})

        async def check() -> bool:
            async with db.connect() as conn:
                n = await conn.scalar(
                    text("SELECT count(*) FROM processed_events WHERE event_id = ANY(:ids) AND status = 'done'"),
                    {"ids": ids},
                )
            return bool(n == len(ids))

        await eventually(check, what=f"{len(ids)} events processed")

    return wait_for


@pytest.fixture
async def other_app(settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    """Start another instance of the app on the same database with changed settings."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**changes: Any) -> httpx.AsyncClient:
            group = f"{settings.consumer_group}-{uuid.uuid4().hex[:6]}"
            await move_group_to_end(kafka_bootstrap(), f"{group}.events", TOPICS)
            changed = settings.model_copy(update={"kafka_consumer_group": group, **changes})
            http = await stack.enter_async_context(app_client(create_app(changed)))
            await eventually(lambda: _ready(http), timeout=60, what="second app ready")
            return http

        yield start
