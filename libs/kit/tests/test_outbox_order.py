"""Two relays on one outbox (two replicas of a service) keep every key's events in order on Kafka
(issue 14): one relay at a time publishes a lane, under its advisory lock."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import Topic
from contracts.events import DeviceTelemetryReported
from kit.db import make_sessionmaker, unit_of_work
from kit.kafka import make_producer
from kit.outbox import OutboxRelay, OutboxWakeup, add_events
from kit.testing import EventRecorder, eventually, kafka_bootstrap, kit_database

pytestmark = pytest.mark.integration

KEYS = 6
EVENTS = 600


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database("pb_test_kit_order") as engine:
        yield engine


async def test_two_relays_keep_each_keys_events_in_order(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    run = uuid.uuid4().hex[:8]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    recorder = EventRecorder(kafka_bootstrap(), [Topic.DEVICE_TELEMETRY.value])
    await recorder.start()
    producers = [make_producer(kafka_bootstrap(), f"kit-order-{n}") for n in range(2)]
    for producer in producers:
        await producer.start()
    relays = [OutboxRelay(sessions, p, OutboxWakeup(), poll_interval_s=0.05, batch_size=7) for p in producers]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        for start in range(0, EVENTS, 50):  # events keep coming while both relays publish
            batch = []
            for seq in range(start, start + 50):
                device = f"ORD-{run}-{seq % KEYS}"
                at = base + timedelta(milliseconds=seq)
                batch.append((DeviceTelemetryReported(device_id=device, reported_at=at, received_at=at), device, None))
            async with unit_of_work(sessions) as session:
                await add_events(session, batch, producer="kit-order-test")
            await asyncio.sleep(0.01)  # deliberate pacing: events keep arriving while both relays run, not a wait

        def ours() -> list[DeviceTelemetryReported]:
            found = [e.data for e in recorder.seen if isinstance(e.data, DeviceTelemetryReported)]
            return [d for d in found if d.device_id.startswith(f"ORD-{run}-")]

        async def all_arrived() -> bool:
            return len(ours()) >= EVENTS

        await eventually(all_arrived, timeout=60, what="every event on Kafka")
        for key in range(KEYS):
            times = [d.reported_at for d in ours() if d.device_id == f"ORD-{run}-{key}"]
            assert times == sorted(times), f"key {key} arrived out of order"
            assert len(times) == len(set(times)) == EVENTS // KEYS
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar()
        assert left == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await recorder.stop()
        for producer in producers:
            await producer.stop()
