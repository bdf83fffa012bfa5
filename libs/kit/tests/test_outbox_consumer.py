"""The outbox and the idempotent consumer against the real PostgreSQL and Kafka broker."""

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts import Envelope, Topic, event_adapter, new_event
from contracts.events import DeviceTelemetryReported, UserBlocked
from kit.correlation import get_correlation_id
from kit.db import make_sessionmaker, unit_of_work
from kit.kafka import EventConsumer, make_producer, one_transaction_per_fetch
from kit.outbox import Lane, OutboxRelay, OutboxWakeup, add_event, add_events
from kit.testing import eventually, kafka_bootstrap, kit_database, move_group_to_end

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database(
        "pb_test_kit", "CREATE TABLE effects (event_id uuid PRIMARY KEY, device_id text)"
    ) as engine:
        yield engine


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


def _telemetry(device_id: str) -> DeviceTelemetryReported:
    now = datetime.now(UTC)
    return DeviceTelemetryReported(device_id=device_id, reported_at=now, received_at=now)


async def _consume_until(device_id: str, timeout: float = 15.0) -> list[Envelope]:
    consumer = AIOKafkaConsumer(
        Topic.DEVICE_TELEMETRY.value,
        bootstrap_servers=kafka_bootstrap(),
        group_id=f"kit-test-{uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[Envelope] = []
    try:
        async with asyncio.timeout(timeout):
            while not found:
                batches = await consumer.getmany(timeout_ms=300)
                for records in batches.values():
                    for record in records:
                        try:
                            env = event_adapter.validate_json(record.value or b"")
                        except ValidationError:
                            continue  # other tests put garbage on this topic on purpose
                        if isinstance(env.data, DeviceTelemetryReported) and env.data.device_id == device_id:
                            found.append(env)
    finally:
        await consumer.stop()
    return found


async def test_committed_events_are_published_and_rolled_back_ones_never(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    producer = make_producer(kafka_bootstrap(), "kit-test")
    await producer.start()
    wakeup = OutboxWakeup()
    relay = OutboxRelay(sessions, producer, wakeup, poll_interval_s=0.2)
    task = asyncio.create_task(relay.run())
    kept, dropped = f"KEEP-{uuid4().hex[:8]}", f"DROP-{uuid4().hex[:8]}"
    try:
        with pytest.raises(RuntimeError):
            async with unit_of_work(sessions) as session:
                await add_event(session, _telemetry(dropped), key=dropped, producer="kit-test", wakeup=wakeup)
                raise RuntimeError("the state change failed")
        async with unit_of_work(sessions) as session:
            await add_event(session, _telemetry(kept), key=kept, producer="kit-test", wakeup=wakeup)
        found = await _consume_until(kept)
        assert found[0].key == kept
        assert found[0].producer == "kit-test"
        async with sessions() as session:
            unpublished = (
                await session.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
            ).scalar()
            dropped_rows = (
                await session.execute(text("SELECT count(*) FROM outbox WHERE key = :k"), {"k": dropped})
            ).scalar()
        assert unpublished == 0
        assert dropped_rows == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


async def test_consumer_applies_each_event_once_even_when_delivered_twice(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = f"DUP-{uuid4().hex[:8]}"
    envelope = new_event(_telemetry(device), key=device, producer="kit-test")
    calls: list[str] = []

    async def on_telemetry(session: AsyncSession, env: Envelope) -> None:
        assert isinstance(env.data, DeviceTelemetryReported)
        calls.append(env.data.device_id)
        await session.execute(
            text("INSERT INTO effects (event_id, device_id) VALUES (:e, :d)"),
            {"e": env.event_id, "d": env.data.device_id},
        )

    consumer = EventConsumer(
        name="kit-test",
        bootstrap=kafka_bootstrap(),
        group_id=f"kit-test-{uuid4().hex}",
        topics=[Topic.DEVICE_TELEMETRY.value],
        handlers={"device.telemetry.reported": on_telemetry},
        sessionmaker=sessions,
    )
    task = asyncio.create_task(consumer.run())
    producer = make_producer(kafka_bootstrap(), "kit-test")
    await producer.start()
    try:
        for _ in range(2):
            await producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=device.encode())
        await producer.send_and_wait(envelope.topic.value, b'{"not": "an event"}', key=device.encode())
        async with asyncio.timeout(20):
            while True:
                async with sessions() as session:
                    n = (
                        await session.execute(text("SELECT count(*) FROM effects WHERE device_id = :d"), {"d": device})
                    ).scalar()
                if n and consumer.ready:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # give the duplicate time to arrive
        assert calls.count(device) == 1
        assert await consumer.handle(envelope, on_telemetry) == "duplicate"
        # The consumer exports its lag per partition; caught up, it is zero for the partitions it read.
        lags = [
            sample
            for metric in REGISTRY.collect()
            if metric.name == "pb_consumer_lag"
            for sample in metric.samples
            if sample.labels["consumer"] == "kit-test" and sample.labels["topic"] == Topic.DEVICE_TELEMETRY.value
        ]
        assert lags and all(sample.value == 0 for sample in lags)
        # ... and how old each event it handled was (handled once: one observation for this event type).
        handled = REGISTRY.get_sample_value(
            "pb_event_age_seconds_count", {"consumer": "kit-test", "type": "device.telemetry.reported"}
        )
        assert handled is not None and handled >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


async def test_a_handler_that_keeps_failing_is_parked_not_lost(sessions: async_sessionmaker[AsyncSession]) -> None:
    device = f"BAD-{uuid4().hex[:8]}"
    envelope = new_event(_telemetry(device), key=device, producer="kit-test", correlation_id="trace-park")
    seen_traces: list[str | None] = []

    async def broken(session: AsyncSession, env: Envelope) -> None:
        seen_traces.append(get_correlation_id())
        raise ValueError("cannot apply")

    consumer = EventConsumer(
        name="kit-test",
        bootstrap=kafka_bootstrap(),
        group_id="kit-test-parking",
        topics=[Topic.DEVICE_TELEMETRY.value],
        handlers={"device.telemetry.reported": broken},
        sessionmaker=sessions,
        max_attempts=2,
    )
    from aiokafka.structs import ConsumerRecord

    record = ConsumerRecord(
        topic=envelope.topic.value,
        partition=0,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=device.encode(),
        value=envelope.to_bytes(),
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=(),
    )
    await consumer._handle_record(record)
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT status, error FROM processed_events WHERE event_id = :e"), {"e": envelope.event_id}
            )
        ).one()
    assert row.status == "failed"
    assert "cannot apply" in row.error
    assert seen_traces == ["trace-park", "trace-park"]  # each attempt runs in the event's trace
    assert get_correlation_id() is None  # and the trace does not leak past the event


def _record(envelope: Envelope) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=envelope.topic.value,
        partition=0,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=envelope.key.encode(),
        value=envelope.to_bytes(),
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=(),
    )


async def test_one_transaction_per_fetch_has_the_per_event_effect_and_falls_back_one_at_a_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    prefix = f"OTF-{uuid4().hex[:8]}"
    envelopes = [
        new_event(_telemetry(f"{prefix}-{i}"), key=prefix, producer="kit-test", correlation_id=f"trace-{i}")
        for i in range(3)
    ]
    seen: list[tuple[str, str | None]] = []

    async def on_telemetry(session: AsyncSession, env: Envelope) -> None:
        assert isinstance(env.data, DeviceTelemetryReported)
        seen.append((env.data.device_id, get_correlation_id()))
        if env.data.device_id == poison:
            raise ValueError("cannot apply")
        await session.execute(
            text("INSERT INTO effects (event_id, device_id) VALUES (:e, :d)"),
            {"e": env.event_id, "d": env.data.device_id},
        )

    handlers = {"device.telemetry.reported": on_telemetry}
    consumer = EventConsumer(
        name="kit-test",
        bootstrap=kafka_bootstrap(),
        group_id=f"kit-test-{uuid4().hex}",
        topics=[Topic.DEVICE_TELEMETRY.value],
        handlers=handlers,
        sessionmaker=sessions,
        batch_handler=one_transaction_per_fetch(handlers),
        max_attempts=1,
    )

    async def applied() -> list[str]:
        async with sessions() as session:
            rows = await session.execute(
                text("SELECT device_id FROM effects WHERE device_id LIKE :p ORDER BY device_id"), {"p": f"{prefix}%"}
            )
            return list(rows.scalars())

    poison = ""
    # Every event once, in order, each in its own correlation id; a fetch that brings them again is a no-op.
    await consumer._handle_batch([_record(e) for e in envelopes + envelopes[:1]])
    await consumer._handle_batch([_record(e) for e in envelopes])
    assert await applied() == [f"{prefix}-{i}" for i in range(3)]
    assert seen == [(f"{prefix}-{i}", f"trace-{i}") for i in range(3)]
    assert get_correlation_id() is None

    # One event that fails rolls the fetch's transaction back; its events are then applied one at a time:
    # the good ones apply, the bad one is parked.
    more = [new_event(_telemetry(f"{prefix}-{i}"), key=prefix, producer="kit-test") for i in range(3, 6)]
    poison = f"{prefix}-4"
    await consumer._handle_batch([_record(e) for e in more])
    assert await applied() == [f"{prefix}-{i}" for i in (0, 1, 2, 3, 5)]
    async with sessions() as session:
        status = (
            await session.execute(
                text("SELECT status FROM processed_events WHERE event_id = :e"), {"e": more[1].event_id}
            )
        ).scalar_one()
    assert status == "failed"


async def test_a_critical_event_is_relayed_past_a_backlog_of_bulk_events(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    producer = make_producer(kafka_bootstrap(), "kit-test")
    await producer.start()
    wakeup = OutboxWakeup(split=True)
    critical = OutboxRelay(sessions, producer, wakeup, batch_size=100, lane=Lane.CRITICAL)
    bulk = OutboxRelay(sessions, producer, wakeup, batch_size=500, lane=Lane.BULK)
    device, user = f"BULK-{uuid4().hex[:8]}", uuid4()
    try:
        async with unit_of_work(sessions) as session:
            backlog = [(_telemetry(device), device, None) for _ in range(2000)]
            await add_events(session, backlog, producer="kit-test", wakeup=wakeup)
            blocked = UserBlocked(user_id=user, reason="test", at=datetime.now(UTC))
            await add_event(session, blocked, key=str(user), producer="kit-test", wakeup=wakeup)
        assert await critical.publish_pending() == 1  # the one critical row, written after 2,000 bulk ones
        assert await _unpublished(sessions, "user.user.blocked") == 0
        assert await _unpublished(sessions, "device.telemetry.reported") == 2000
        assert await bulk.publish_pending() == 500  # bulk rows only, in order
        assert await critical.publish_pending() == 0
    finally:
        while await bulk.publish_pending():
            pass
        await producer.stop()


async def _unpublished(sessions: async_sessionmaker[AsyncSession], event_type: str) -> int:
    async with sessions() as session:
        query = text("SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_type = :t")
        return int((await session.execute(query, {"t": event_type})).scalar_one())


async def test_offsets_are_committed_at_most_every_interval_and_once_more_at_the_stop(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    group = f"kit-test-{uuid4().hex}"
    topic = Topic.DEVICE_TELEMETRY.value
    await move_group_to_end(kafka_bootstrap(), group, [topic])
    handled: list[str] = []

    async def on_telemetry(_session: AsyncSession, env: Envelope) -> None:
        assert isinstance(env.data, DeviceTelemetryReported)
        handled.append(env.data.device_id)

    consumer = EventConsumer(
        name="kit-test-commits",
        bootstrap=kafka_bootstrap(),
        group_id=group,
        topics=[topic],
        handlers={"device.telemetry.reported": on_telemetry},
        sessionmaker=sessions,
        commit_interval_s=3600,
    )
    commits: list[dict[TopicPartition, int]] = []
    commit = consumer._commit

    async def counted(kafka_consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int]) -> None:
        commits.append(dict(offsets))
        await commit(kafka_consumer, offsets)

    monkeypatch.setattr(consumer, "_commit", counted)
    device = f"COMMIT-{uuid4().hex[:8]}"
    producer = make_producer(kafka_bootstrap(), "kit-test")
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap(), group_id=group, enable_auto_commit=False)
    await producer.start()
    await reader.start()

    async def send_and_await_handling() -> TopicPartition:
        envelope = new_event(_telemetry(device), key=device, producer="kit-test")
        meta = await producer.send_and_wait(topic, envelope.to_bytes(), key=device.encode())
        count = handled.count(device) + 1
        await eventually(lambda: _true(handled.count(device) == count), what="the event handled")
        return TopicPartition(topic, meta.partition)

    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: _true(consumer.ready), what="the consumer assigned")
        await send_and_await_handling()
        partition = await send_and_await_handling()
        # The first fetch that brought events was committed at once; the ones after wait for the interval.
        assert len(commits) == 1
        assert consumer._consumer is not None
        position = await consumer._consumer.position(partition)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert len(commits) == 2
        assert await reader.committed(partition) == position  # the stop committed all it had handled
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await reader.stop()


async def _true(value: bool) -> bool:
    return value
