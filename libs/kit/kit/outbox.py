"""Transactional outbox: an event is written in the same transaction as the state change it
reports, and a relay publishes committed rows to Kafka. Nothing is published that did not commit."""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope, new_event
from contracts.events import EventData
from kit.correlation import get_correlation_id
from kit.db import after_commit, define_kit_tables, make_metadata

log = logging.getLogger(__name__)

_outbox_table, _ = define_kit_tables(make_metadata())

OUTBOX_PUBLISHED = Counter("pb_outbox_published_total", "Outbox events published to Kafka", ["topic"])
OUTBOX_BACKLOG = Gauge("pb_outbox_backlog", "Outbox events committed but not yet published")


class OutboxWakeup:
    """Wakes the relay right after a commit that wrote events, so publishing does not wait a poll."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        self._event.clear()


async def add_event(
    session: AsyncSession,
    data: EventData,
    *,
    key: str,
    producer: str,
    wakeup: OutboxWakeup | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    envelope = new_event(data, key=key, producer=producer, correlation_id=get_correlation_id(), occurred_at=occurred_at)
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
        after_commit(session, wakeup.notify)
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
    envelopes = [
        new_event(data, key=key, producer=producer, correlation_id=correlation_id or current)
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
        after_commit(session, wakeup.notify)
    return envelopes


class OutboxRelay:
    """Publishes committed outbox rows in id order. Several instances may run: rows are claimed
    with SKIP LOCKED. A row is marked published only after Kafka acknowledged it (at least once)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
        wakeup: OutboxWakeup,
        poll_interval_s: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._producer = producer
        self._wakeup = wakeup
        self._poll = poll_interval_s
        self._batch = batch_size
        self.last_error: str | None = None

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
            if sent < self._batch:
                await self._wakeup.wait(self._poll)

    async def publish_pending(self) -> int:
        async with self._sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    text(
                        "SELECT id, topic, key, payload FROM outbox WHERE published_at IS NULL "
                        "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self._batch},
                )
            ).all()
            if not rows:
                OUTBOX_BACKLOG.set(0)
                return 0
            futures = [
                await self._producer.send(row.topic, value=bytes(row.payload), key=row.key.encode()) for row in rows
            ]
            for fut in futures:
                await fut
            await session.execute(
                text("UPDATE outbox SET published_at = :now WHERE id = ANY(:ids)"),
                {"now": datetime.now(UTC), "ids": [row.id for row in rows]},
            )
            for row in rows:
                OUTBOX_PUBLISHED.labels(row.topic).inc()
            return len(rows)
