"""Transactional outbox: an event is written in the same transaction as the state change it
reports, and a relay publishes committed rows to Kafka. Nothing is published that did not commit.

Two lanes: a service that writes bulk events (`contracts.topics.BULK_TOPICS`: telemetry, presence,
refused device messages) relays them with a relay of their own, so a backlog of them never holds up
a rental's events (an eject result waiting behind ten thousand presence changes is a user told "no
answer" although the bank came out). Each topic stays on one lane, so per-partition order holds."""

import asyncio
import contextlib
import logging
import re
import zlib
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts import Envelope, new_event
from contracts.events import EventData
from contracts.topics import BULK_TOPICS
from kit.correlation import get_correlation_id
from kit.db import after_commit, define_kit_tables, make_metadata
from kit.tracing import current_traceparent, kafka_headers, traceparent_in_payload

if TYPE_CHECKING:
    from kit.broker_loss import PublishedOffsets

log = logging.getLogger(__name__)

_outbox_table, _ = define_kit_tables(make_metadata())

OUTBOX_PUBLISHED = Counter("pb_outbox_published_total", "Outbox events published to Kafka", ["topic"])
OUTBOX_BACKLOG = Gauge("pb_outbox_backlog", "Outbox events committed but not yet published", ["lane"])


class Lane(StrEnum):
    CRITICAL = "critical"
    BULK = "bulk"


def lane_of(topic: str) -> Lane:
    return Lane.BULK if topic in BULK_TOPICS else Lane.CRITICAL


# The lanes' row filters, as literal SQL (our own topic names, not input) so that PostgreSQL matches
# them to the partial indexes of a service that splits its outbox (device-svc's migration 0007).
assert all(re.fullmatch(r"[a-z0-9._]+", topic) for topic in BULK_TOPICS)
_BULK_LIST = ", ".join(f"'{topic}'" for topic in sorted(BULK_TOPICS))
LANE_FILTERS: dict[Lane, str] = {Lane.CRITICAL: f"topic NOT IN ({_BULK_LIST})", Lane.BULK: f"topic IN ({_BULK_LIST})"}


class OutboxWakeup:
    """Wakes a lane's relay right after a commit that wrote its events, so publishing does not wait a
    poll. Unless `split`, every event wakes the one relay (which takes every lane)."""

    def __init__(self, *, split: bool = False) -> None:
        self.split = split
        self._events = {lane: asyncio.Event() for lane in Lane}

    def notify(self, lane: Lane = Lane.CRITICAL) -> None:
        self._events[lane if self.split else Lane.CRITICAL].set()

    def notify_topics(self, topics: Sequence[str]) -> None:
        for lane in {lane_of(topic) for topic in topics}:
            self.notify(lane)

    async def wait(self, seconds: float, lane: Lane = Lane.CRITICAL) -> None:
        event = self._events[lane]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()


async def add_event(
    session: AsyncSession,
    data: EventData,
    *,
    key: str,
    producer: str,
    wakeup: OutboxWakeup | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    envelope = new_event(
        data,
        key=key,
        producer=producer,
        correlation_id=get_correlation_id(),
        occurred_at=occurred_at,
        traceparent=current_traceparent(),
    )
    await session.execute(
        insert(_outbox_table).values(
            event_id=envelope.event_id,
            event_type=envelope.type,
            topic=envelope.topic.value,
            key=envelope.key,
            payload=envelope.to_bytes(),
        )
    )
    if wakeup is not None:
        lane = lane_of(envelope.topic)
        after_commit(session, lambda: wakeup.notify(lane))
    return envelope


async def add_events(
    session: AsyncSession,
    events: Sequence[tuple[EventData, str, str | None]],
    *,
    producer: str,
    wakeup: OutboxWakeup | None = None,
) -> list[Envelope]:
    """Many events in one multi-row insert: `(data, key, correlation id)` each (None: the current
    correlation id). For high-volume writers (a batch of device telemetry)."""
    if not events:
        return []
    current = get_correlation_id()
    traceparent = current_traceparent()
    envelopes = [
        new_event(data, key=key, producer=producer, correlation_id=correlation_id or current, traceparent=traceparent)
        for data, key, correlation_id in events
    ]
    await session.execute(
        insert(_outbox_table),
        [
            {
                "event_id": e.event_id,
                "event_type": e.type,
                "topic": e.topic.value,
                "key": e.key,
                "payload": e.to_bytes(),
            }
            for e in envelopes
        ],
    )
    if wakeup is not None:
        topics = [e.topic.value for e in envelopes]
        after_commit(session, lambda: wakeup.notify_topics(topics))
    return envelopes


_BUSY_RETRY_S = 0.05


def _lane_lock_key(lane: Lane | None) -> int:
    """The advisory lock a relay of `lane` holds while it publishes (a stable 63-bit number)."""
    return zlib.crc32(f"kit.outbox.relay.{lane.value if lane is not None else 'all'}".encode())


class OutboxRelay:
    """Publishes committed outbox rows in id order. Several instances may run (replicas of a service):
    one at a time publishes a lane, holding that lane's advisory lock for its batch (a transaction-level
    lock, so a relay that dies frees it); the others find it taken and wait for the next wake-up. Two
    relays sending batches side by side would let a later event of a key reach Kafka before an earlier
    one; one sender per lane keeps every key's events in id order (tests/test_outbox_order.py). A row is
    marked published only after Kafka acknowledged it (at least once). `lane`: only that lane's rows (a
    service that splits its outbox runs one relay per lane); None: every row. `offsets`: where the relay
    notes the offsets Kafka acknowledged, for kit.broker_loss to notice a broker that lost them."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
        wakeup: OutboxWakeup,
        poll_interval_s: float = 0.5,
        batch_size: int = 500,
        lane: Lane | None = None,
        offsets: "PublishedOffsets | None" = None,
    ) -> None:
        bind = sessionmaker.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            raise TypeError("the outbox relay needs a sessionmaker bound to an AsyncEngine")
        self._engine = bind
        self._offsets = offsets
        self._producer = producer
        self._wakeup = wakeup
        self._poll = poll_interval_s
        self._batch = batch_size
        self._wake_lane = lane or Lane.CRITICAL
        where = "published_at IS NULL" + (f" AND {LANE_FILTERS[lane]}" if lane is not None else "")
        # The lane's lock and the claim in one round trip: the lock is taken first (a one-time filter of the
        # claim, checked before its scan), and the claim reads nothing unless the lock was ours. One row with
        # `got` false and no id: another relay holds the lane; `got` true and no id: nothing to publish.
        self._claim = (
            "WITH lane AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1) AS got) "  # noqa: S608 (our topic names, checked above)
            "SELECT lane.got, o.id, o.topic, o.key, o.payload FROM lane LEFT JOIN LATERAL ("
            f"SELECT id, topic, key, payload FROM outbox WHERE lane.got AND {where} "
            "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) o ON true"
        )
        self._lock_key = _lane_lock_key(lane)
        self._backlog = OUTBOX_BACKLOG.labels(lane.value if lane is not None else "all")
        self.last_error: str | None = None
        self.lane_busy = False

    async def run(self) -> None:
        while True:
            try:
                sent = await self.publish_pending()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: keep the rows, try again
                self.last_error = repr(exc)
                log.warning("outbox relay failed; retrying", extra={"error": repr(exc)})
                sent = 0
                await asyncio.sleep(min(self._poll * 4, 2.0))
            if self.lane_busy:
                await asyncio.sleep(_BUSY_RETRY_S)  # soon: the holder may not have claimed our rows
            elif sent < self._batch:
                await self._wakeup.wait(self._poll, self._wake_lane)

    async def publish_pending(self) -> int:
        """One pass: claim the lane's oldest unpublished rows, send them, mark them once Kafka acknowledged.

        On the pooled connection's asyncpg driver, below SQLAlchemy (issue 9: its session and statement
        machinery cost more CPU than the pass's own work): BEGIN, the claim (a prepared statement), and the
        mark with the COMMIT in one simple query, three round trips for a pass that publishes. The transaction
        is ours, not SQLAlchemy's (it sees none), so any failure closes the connection instead of returning it
        to the pool in the middle of one; PostgreSQL then rolls back and frees the lane's lock."""
        async with self._engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            try:
                return await self._publish_on(driver)
            except BaseException:
                await conn.invalidate()
                raise

    async def _publish_on(self, db: asyncpg.Connection) -> int:
        await db.execute("BEGIN")
        claimed = await db.fetch(self._claim, self._lock_key, self._batch)
        self.lane_busy = not claimed[0]["got"]
        rows = [row for row in claimed if row["id"] is not None]
        if not rows:
            await db.execute("COMMIT")
            if not self.lane_busy:
                self._backlog.set(0)
            return 0  # lane busy: another replica is publishing it, our rows go out after its batch
        futures = []
        for row in rows:
            payload = row["payload"]
            headers = kafka_headers(traceparent_in_payload(payload))  # None unless tracing is on
            futures.append(
                await self._producer.send(row["topic"], value=payload, key=row["key"].encode(), headers=headers)
            )
        metas = [await fut for fut in futures]
        if self._offsets is not None and self._offsets.record_publish(metas):
            log.warning("the broker acknowledged offsets at or below earlier ones: it lost its log")
        ids = ",".join(str(int(row["id"])) for row in rows)  # bigints read back from the table: a safe literal
        await db.execute(f"UPDATE outbox SET published_at = now() WHERE id = ANY('{{{ids}}}'::bigint[]); COMMIT")  # noqa: S608
        for row in rows:
            OUTBOX_PUBLISHED.labels(row["topic"]).inc()
        return len(rows)
