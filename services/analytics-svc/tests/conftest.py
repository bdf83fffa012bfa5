"""Integration fixtures: the real PostgreSQL database and the real Kafka broker.

Each test session consumes with its own consumer group, first moved to the end of the topics,
so only events produced during the session reach the service."""

import contextlib
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from analytics_svc.main import TOPICS as CONSUMED
from analytics_svc.main import create_app
from analytics_svc.rollup.service import refresh
from analytics_svc.settings import Settings
from analytics_svc.webhooks.service import PARTNER_EVENTS
from contracts import Envelope
from contracts.events import (
    BankEjected,
    BankReturned,
    DeviceAlarmKind,
    DeviceAlarmRaised,
    DeviceTelemetryReported,
    EventData,
    PriceSnapshot,
    RentalEnded,
    RentalStarted,
)
from contracts.regions import RegionRef, region_at
from kit.auth import TokenSigner
from kit.db import make_sessionmaker
from kit.testing import (
    EventBus,
    app_client,
    ensure_database,
    eventually,
    fresh_consumer_group,
    kafka_bootstrap,
    migrate,
    move_group_to_end,
    test_database_url,
    truncate_all,
)

SERVICE_DIR = Path(__file__).resolve().parents[1]
TOPICS = [topic.value for topic in CONSUMED]
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
async def consumer_group() -> str:
    return await fresh_consumer_group(
        "analytics-svc-test", {"events": TOPICS, "webhooks": [t.value for t in PARTNER_EVENTS]}
    )


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
        rollup_interval_s=0,  # tests rebuild the rollup themselves (`refresh_rollup`), when they choose
        hotspot_interval_s=0,  # and evaluate hotspots themselves (test_hotspots.py)
        webhook_interval_s=0,  # and send webhooks themselves (test_webhooks.py)
        webhook_allow_loopback=True,  # to the test's receiver on this machine, like the local stacks
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
                    # The facts' consumer (`<group>.events`); partner webhooks read some topics in a group of their own.
                    text(
                        "SELECT count(*) FROM processed_events WHERE event_id = ANY(:ids) AND status = 'done'"
                        " AND consumer LIKE '%.events'"
                    ),
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


@pytest.fixture
def refresh_rollup(db: AsyncEngine) -> Callable[[], Awaitable[int]]:
    sessionmaker = make_sessionmaker(db)

    async def run() -> int:
        return await refresh(sessionmaker)

    return run


# ---- the small data set of test_analyses.py ------------------------------------------------------
# A small seeded data set whose analyses are computed by hand in test_analyses.py.
#
# Local time is Asia/Shanghai (UTC+8). Cabinets: A in Futian (440304), B in Luohu (440303), C in
# Nanshan (440305), D in Dongcheng, Beijing (110101).
#
# | rental | user | bank | from | local start      | back at | state           |
# | R1     | U1   | PB-1 | A    | 2026-11-02 09:10 | B       | returned        |
# | R2     | U2   | PB-2 | A    | 2026-11-02 09:50 | A       | returned        |
# | R3     | U1   | PB-3 | B    | 2026-11-03 18:05 | C       | returned        |
# | R4     | U3   | PB-4 | C    | 2026-11-04 09:30 | -       | out a month: lost |
# | R5     | U2   | PB-5 | D    | 2026-11-09 12:00 | D       | returned        |
# | R6     | U4   | PB-6 | A    | 2026-11-06 07:30 | A       | returned (UTC 11-05 23:30) |
# | R7     | U5   | PB-7 | B    | an hour ago      | -       | rented          |
#
# PB-2 raises a high-temperature alarm after its return (faulty in Futian). Stock reports: A 5,
# B 3, C 0, D 4 banks in slots.

SHANGHAI = ZoneInfo("Asia/Shanghai")
PRICE = PriceSnapshot(period_minutes=60, price_per_period_fen=300, free_minutes=5, daily_cap_fen=3000)
CABINETS = {
    "A": ("CAB-A", 22.54, 114.05),
    "B": ("CAB-B", 22.57, 114.14),
    "C": ("CAB-C", 22.53, 113.93),
    "D": ("CAB-D", 39.91, 116.42),
}
USERS = {name: uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.analytics.test") for name in ("U1", "U2", "U3", "U4", "U5")}


def cabinet_id(name: str) -> str:
    return CABINETS[name][0]


def region(name: str) -> RegionRef:
    _, lat, lon = CABINETS[name]
    return region_at(lat, lon)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


@dataclass(frozen=True)
class Rental:
    name: str
    user: str
    bank: str
    start: str
    started_at: datetime
    back: str | None = None
    minutes: int = 30

    @property
    def rental_id(self) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.name}.rental.analytics.test")

    @property
    def ended_at(self) -> datetime:
        return self.started_at + timedelta(minutes=self.minutes)


def rentals(now: datetime) -> list[Rental]:
    return [
        Rental("R1", "U1", "PB-1", "A", local("2026-11-02T09:10"), "B"),
        Rental("R2", "U2", "PB-2", "A", local("2026-11-02T09:50"), "A"),
        Rental("R3", "U1", "PB-3", "B", local("2026-11-03T18:05"), "C"),
        Rental("R4", "U3", "PB-4", "C", local("2026-11-04T09:30")),
        Rental("R5", "U2", "PB-5", "D", local("2026-11-09T12:00"), "D"),
        Rental("R6", "U4", "PB-6", "A", local("2026-11-06T07:30"), "A"),
        Rental("R7", "U5", "PB-7", "B", now - timedelta(hours=1)),
    ]


def rental_events(r: Rental) -> list[tuple[EventData, str]]:
    """(data, key) of every fact one rental produces, in the order the platform produces them."""
    events: list[tuple[EventData, str]] = [
        (
            BankEjected(
                command_id=uuid.uuid5(r.rental_id, "cmd"),
                rental_id=r.rental_id,
                bank_id=r.bank,
                cabinet_id=cabinet_id(r.start),
                slot=1,
                battery_pct=90,
                ejected_at=r.started_at,
                region=region(r.start),
            ),
            cabinet_id(r.start),
        ),
        (
            RentalStarted(
                rental_id=r.rental_id,
                user_id=USERS[r.user],
                bank_id=r.bank,
                cabinet_id=cabinet_id(r.start),
                slot=1,
                started_at=r.started_at,
                price=PRICE,
            ),
            str(r.rental_id),
        ),
    ]
    if r.back is not None:
        events += [
            (
                BankReturned(
                    report_id=f"{r.name}-return",
                    bank_id=r.bank,
                    cabinet_id=cabinet_id(r.back),
                    slot=2,
                    battery_pct=60,
                    returned_at=r.ended_at,
                    device_reported_at=r.ended_at,
                    received_at=r.ended_at,
                    region=region(r.back),
                ),
                r.bank,
            ),
            (
                RentalEnded(
                    rental_id=r.rental_id,
                    user_id=USERS[r.user],
                    bank_id=r.bank,
                    start_cabinet_id=cabinet_id(r.start),
                    return_cabinet_id=cabinet_id(r.back),
                    started_at=r.started_at,
                    ended_at=r.ended_at,
                    duration_seconds=r.minutes * 60,
                    fee_fen=150,
                ),
                str(r.rental_id),
            ),
        ]
    return events


def device_events(now: datetime) -> list[tuple[EventData, str]]:
    stock = {"A": 5, "B": 3, "C": 0, "D": 4}
    events: list[tuple[EventData, str]] = [
        (
            DeviceTelemetryReported(
                device_id=cabinet_id(name),
                reported_at=now - timedelta(minutes=5),
                received_at=now - timedelta(minutes=5),
                banks_present=n,
                region=region(name),
            ),
            cabinet_id(name),
        )
        for name, n in stock.items()
    ]
    alarm_at = local("2026-11-02T12:00").astimezone(UTC)
    events.append((DeviceAlarmRaised(device_id="PB-2", kind=DeviceAlarmKind.HIGH_TEMPERATURE, at=alarm_at), "PB-2"))
    return events


def all_events(now: datetime) -> list[tuple[EventData, str]]:
    out: list[tuple[EventData, str]] = []
    for r in rentals(now):
        out += rental_events(r)
    return out + device_events(now)


@pytest.fixture
def dataset() -> types.SimpleNamespace:
    """The data set above, for test modules (they cannot import conftest)."""
    return types.SimpleNamespace(
        SHANGHAI=SHANGHAI,
        Rental=Rental,
        USERS=USERS,
        region=region,
        rentals=rentals,
        rental_events=rental_events,
        device_events=device_events,
        all_events=all_events,
        cabinet_id=cabinet_id,
    )


@pytest.fixture
async def seeded(client, bus, processed, refresh_rollup, dataset):
    """The data set, through the broker, consumed and rolled up; the app's client."""
    now = datetime.now(UTC)
    sent = []
    for data, key in dataset.all_events(now):
        if isinstance(data, DeviceAlarmRaised):
            continue  # raised long after its bank's return: sent once the rest is in
        sent.append(await bus.publish(data, key))
    await processed(sent)
    alarms = [await bus.publish(d, k) for d, k in dataset.device_events(now) if isinstance(d, DeviceAlarmRaised)]
    await processed(alarms)
    await refresh_rollup()
    return client
