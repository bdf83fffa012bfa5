import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from asset_credit_svc.main import create_app
from asset_credit_svc.settings import Settings
from contracts import Envelope, Topic, event_adapter
from kit.auth import TokenSigner
from kit.testing import (
    app_client,
    fresh_consumer_group,
    kafka_bootstrap,
    migrated_database,
    truncate_all,
)

SERVICE_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
async def database_url() -> str:
    return await migrated_database("asset", SERVICE_DIR)


@pytest.fixture(scope="session")
async def consumer_group() -> str:
    """A consumer group of our own at the end of the topics of its "events" consumer, so the test app answers
    only what the tests produce (the dev broker is shared)."""
    return await fresh_consumer_group("asset-credit-svc-test", {"events": [Topic.CHARGES, Topic.VAS_CONSENTS]})


@pytest.fixture(scope="session")
def settings_factory(database_url: str, keypair: tuple[Path, Path], consumer_group: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "pb_env": "test",
            "database_url": database_url,
            "kafka_bootstrap": kafka_bootstrap(),
            "kafka_consumer_group": consumer_group,
            "jwt_public_key_file": keypair[1],
            "outbox_poll_interval_s": 0.1,
            "sandbox_notify_backoff_s": 0.05,
        }
        values.update(overrides)
        return Settings(**values)

    return make


def asgi_notify_client(app: FastAPI, _: Settings) -> httpx.AsyncClient:
    """The sandbox's notifications go over HTTP to the in-process app itself."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asset-credit-svc")


class Service:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, signer: TokenSigner) -> None:
        self.app = app
        self.client = client
        self.signer = signer

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def provider(self, channel: str) -> Any:
        return self.runtime.extras["payment_providers"][channel]

    def auth(self, user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.signer.issue(str(user_id))}"}

    async def balance(self, user_id: uuid.UUID) -> int:
        response = await self.client.get("/v1/wallet", headers=self.auth(user_id))
        assert response.status_code == 200, response.text
        return int(response.json()["balance_fen"])

    async def top_up(self, user_id: uuid.UUID, amount_fen: int, channel: str = "alipay") -> dict[str, Any]:
        response = await self.client.post(
            "/v1/wallet/top-ups",
            json={"amount_fen": amount_fen, "channel": channel},
            headers={**self.auth(user_id), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def wait_top_up(self, user_id: uuid.UUID, top_up_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.client.get(f"/v1/wallet/top-ups/{top_up_id}", headers=self.auth(user_id))
            assert response.status_code == 200, response.text
            body = dict(response.json())
            if body["status"] != "pending":
                return body
            assert asyncio.get_running_loop().time() < deadline, "top-up stayed pending"
            await asyncio.sleep(0.05)

    async def funded_user(self, amount_fen: int) -> uuid.UUID:
        user_id = uuid.uuid4()
        top_up = await self.top_up(user_id, amount_fen)
        assert (await self.wait_top_up(user_id, top_up["top_up_id"]))["status"] == "succeeded"
        return user_id

    async def wait_consumers_ready(self, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while (await self.client.get("/readyz")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, (await self.client.get("/readyz")).text
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
def service_factory(
    database_url: str, settings_factory: Callable[..., Settings], signer: TokenSigner
) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Service]:
        await truncate_all(database_url)
        app = create_app(settings_factory(**overrides), notify_client=asgi_notify_client)
        async with app_client(app) as client:
            yield Service(app, client, signer)

    return start


@pytest.fixture
async def svc(service_factory: Callable[..., Any]) -> AsyncIterator[Service]:
    async with service_factory() as service:
        yield service


class TopicWatch:
    """Reads a topic from its current end (no consumer group), collecting envelopes."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap(), enable_auto_commit=False)
        self.seen: list[Envelope] = []

    async def start(self) -> None:
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is produced
            await self.consumer.position(tp)

    async def wait_for(self, predicate: Callable[[Envelope], bool], timeout: float = 15.0) -> Envelope:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for envelope in self.seen:
                if predicate(envelope):
                    return envelope
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"no matching event on {self.topic}; saw {[e.type for e in self.seen]}"
            await self.drain(min(remaining, 0.5))

    async def drain(self, seconds: float) -> None:
        batches = await self.consumer.getmany(timeout_ms=int(seconds * 1000))
        for records in batches.values():
            for record in records:
                if record.value is not None:
                    self.seen.append(event_adapter.validate_json(record.value))

    async def stop(self) -> None:
        await self.consumer.stop()


@pytest.fixture
async def payments_topic() -> AsyncIterator[TopicWatch]:
    watch = TopicWatch(Topic.PAYMENTS.value)
    await watch.start()
    yield watch
    await watch.stop()


@pytest.fixture
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap(), enable_idempotence=False, acks="all")
    await p.start()
    yield p
    await p.stop()
