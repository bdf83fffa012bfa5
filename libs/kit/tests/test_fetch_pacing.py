"""Fetch pacing: a consumer fetches with a short wait while records flow and with its latency class's
wait at rest, and the first record after rest brings the short wait back; against the real broker."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts import Envelope, Topic, new_event
from contracts.events import DeviceTelemetryReported
from kit.db import make_sessionmaker
from kit.kafka import EventConsumer, FetchPacing, LatencyClass, make_producer
from kit.settings import ServiceSettings
from kit.testing import eventually, kafka_bootstrap, kit_database

pytestmark = pytest.mark.integration

FLOW_MS, REST_MS = 50, 1500


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database("pb_test_kit_pacing") as engine:
        yield engine


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


def _telemetry(device_id: str) -> Envelope:
    now = datetime.now(UTC)
    data = DeviceTelemetryReported(device_id=device_id, reported_at=now, received_at=now)
    return new_event(data, key=device_id, producer="kit-test")


def _fetcher_wait_ms(consumer: EventConsumer) -> int:
    """The wait aiokafka puts into its next fetch request (what FetchWait sets)."""
    assert consumer._consumer is not None
    wait: int = consumer._consumer._fetcher._fetch_max_wait_ms
    return wait


async def test_a_consumer_rests_with_the_long_wait_and_flows_again_on_the_first_record(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = f"PACE-{uuid4().hex[:8]}"
    seen: list[str] = []

    async def on_telemetry(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, DeviceTelemetryReported)
        seen.append(envelope.data.device_id)
        await session.execute(text("SELECT 1"))

    consumer = EventConsumer(
        name="kit-pacing",
        bootstrap=kafka_bootstrap(),
        group_id=f"kit-pacing-{uuid4().hex}",
        topics=[Topic.DEVICE_TELEMETRY.value],
        handlers={"device.telemetry.reported": on_telemetry},
        sessionmaker=sessions,
        pacing=FetchPacing(rest_wait_ms=REST_MS, flow_wait_ms=FLOW_MS, flow_s=0.5),
    )
    task = asyncio.create_task(consumer.run())
    producer = make_producer(kafka_bootstrap(), "kit-pacing-test")
    await producer.start()
    try:

        async def resting() -> bool:
            wait = consumer.fetch_wait
            return consumer.ready and wait is not None and not wait.flowing and _fetcher_wait_ms(consumer) == REST_MS

        # Started in flow (a backlog, or a caller waiting on the first event), then quiet: the long wait.
        await eventually(resting, timeout=30, what="the consumer to rest with the long fetch wait")
        assert consumer.fetch_wait is not None and consumer.fetch_wait.wait_ms == REST_MS

        envelope = _telemetry(device)
        await producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=device.encode())

        async def handled_and_flowing() -> bool:
            return device in seen and _fetcher_wait_ms(consumer) == FLOW_MS

        await eventually(handled_and_flowing, timeout=10, what="the record handled and the short wait back")
        assert consumer.fetch_wait is not None and consumer.fetch_wait.flowing

        # and it rests again once the records stop
        await eventually(resting, timeout=10, what="the consumer to rest again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


async def test_without_a_flow_wait_a_consumer_keeps_one_wait(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Apache Kafka answers a waiting fetch when data arrives: production consumers keep the one wait."""
    consumer = EventConsumer(
        name="kit-pacing-kafka",
        bootstrap=kafka_bootstrap(),
        group_id=f"kit-pacing-{uuid4().hex}",
        topics=[Topic.DEVICE_TELEMETRY.value],
        handlers={},
        sessionmaker=sessions,
        pacing=FetchPacing(rest_wait_ms=500, flow_wait_ms=None),
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def ready() -> bool:
            return consumer.ready

        await eventually(ready, timeout=30, what="the consumer to be assigned")
        assert consumer.fetch_wait is not None and not consumer.fetch_wait.flowing
        assert _fetcher_wait_ms(consumer) == 500
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_latency_class_chooses_the_rest_wait() -> None:
    settings = ServiceSettings(
        kafka_fetch_max_wait_ms=500,
        kafka_background_fetch_max_wait_ms=2000,
        kafka_fetch_flow_wait_ms=50,
        kafka_background_fetch_flow_wait_ms=None,  # the stack's environment sets one
        kafka_fetch_flow_s=7,
    )
    assert FetchPacing.for_class(settings, LatencyClass.CRITICAL) == FetchPacing(500, 50, 7)
    assert FetchPacing.for_class(settings, LatencyClass.BACKGROUND) == FetchPacing(2000, 50, 7)
    # background consumers may fetch less often while records flow
    slower = settings.model_copy(update={"kafka_background_fetch_flow_wait_ms": 200})
    assert FetchPacing.for_class(slower, LatencyClass.CRITICAL) == FetchPacing(500, 50, 7)
    assert FetchPacing.for_class(slower, LatencyClass.BACKGROUND) == FetchPacing(2000, 200, 7)
    # production defaults (Apache Kafka): one wait, Kafka's own default, no switching
    fields = ServiceSettings.model_fields
    assert fields["kafka_fetch_max_wait_ms"].default == fields["kafka_background_fetch_max_wait_ms"].default == 500
    assert fields["kafka_fetch_flow_wait_ms"].default is None
    assert fields["kafka_background_fetch_flow_wait_ms"].default is None
