"""Recovering from a broker that lost what it had acknowledged (issue 14).

The local Kafka-protocol broker (tansu) keeps events in memory: a restart loses every event published and
not yet consumed, although each was acknowledged and its outbox row marked published. A production
cluster can lose data too (a cluster rebuilt from nothing, an unclean leader election). The outbox still
holds every event, so the platform recovers by publishing again what the broker may have lost; consumers
record processed event ids (kit.kafka), so the copies of events already consumed are dropped as duplicates.

How the loss is noticed, by each service for the topics it publishes to:
- while running: the relay remembers the highest offset the broker acknowledged per partition
  (`PublishedOffsets`); a partition whose end offset is now at or below it has lost acknowledged records;
- at start (the service may have restarted with the broker): a topic this service published to recently
  whose partitions are all empty (end offsets 0) lost them, since a partition's end offset never goes back.

Then the outbox rows published within `replay window` are marked unpublished, newest first in bounded
batches, and the relay sends them again in id order. Events published straight to Kafka without the outbox
(`Runtime.publish_direct`, device reports) are not replayed: the device's next report carries the state."""

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import unit_of_work
from kit.outbox import Lane, OutboxWakeup

log = logging.getLogger(__name__)

BROKER_LOSSES = Counter("pb_broker_losses_total", "Times the broker was found to have lost acknowledged events")
REPUBLISHED = Counter("pb_outbox_republished_total", "Outbox rows marked for publishing again after a broker loss")

# How many of the newest published rows tell which topics this service publishes to (the start check).
_RECENT_ROWS = 2000
_END_OFFSETS_TIMEOUT_S = 10.0


class PublishedOffsets:
    """The highest offset the broker acknowledged per partition, as this process's relays saw it."""

    def __init__(self) -> None:
        self._high: dict[TopicPartition, int] = {}

    def record(self, meta: RecordMetadata) -> None:
        tp = TopicPartition(meta.topic, meta.partition)
        if meta.offset > self._high.get(tp, -1):
            self._high[tp] = meta.offset

    def snapshot(self) -> dict[TopicPartition, int]:
        return dict(self._high)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._high.pop(tp, None)


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
    ) -> None:
        self._sessionmaker = sessionmaker
        self._bootstrap = bootstrap
        self._offsets = offsets
        self._wakeup = wakeup
        self._window = timedelta(seconds=replay_window_s)
        self._interval = interval_s
        self._client_id = client_id
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
        finally:
            if consumer is not None:
                await consumer.stop()

    async def check(self, consumer: AIOKafkaConsumer) -> bool:
        published = self._offsets.snapshot()
        if not published:
            return False
        ends = await _end_offsets(consumer, list(published))
        lost = {tp: high for tp, high in published.items() if ends.get(tp, 0) <= high}
        if not lost:
            return False
        described = {f"{tp.topic}[{tp.partition}]": f"acked {high}, end {ends.get(tp, 0)}" for tp, high in lost.items()}
        await self._recover(f"partitions behind what they acknowledged: {described}")
        self._offsets.forget(published)  # start afresh: the offsets the broker gives from now on
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
