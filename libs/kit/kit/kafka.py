"""Kafka clients and the idempotent consumer loop."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope, event_adapter
from kit.correlation import set_correlation_id
from kit.db import unit_of_work

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]

CONSUMED = Counter("pb_events_consumed_total", "Events consumed", ["consumer", "type", "outcome"])
HANDLE_SECONDS = Histogram("pb_event_handle_seconds", "Time to handle one event", ["consumer", "type"])


def make_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    # Idempotence stays off: the local broker (tansu) does not implement InitProducerId.
    # Exactly-once effects come from the outbox plus idempotent consumers instead.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=False,
        acks="all",
        linger_ms=0,
        request_timeout_ms=10_000,
    )


async def start_with_retry(client: AIOKafkaProducer | AIOKafkaConsumer, what: str, attempts: int = 30) -> None:
    for attempt in range(1, attempts + 1):
        try:
            await client.start()
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("kafka %s not reachable yet (%s); retrying", what, exc)
            await asyncio.sleep(min(0.2 * attempt, 2.0))


class EventConsumer:
    """Consumes topics and hands each event to its handler inside one unit of work that also
    records the event id, so a redelivered event is a no-op. Offsets are committed only after
    the effect committed. A handler that keeps failing is parked as `failed` with its error,
    never silently dropped."""

    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        group_id: str,
        topics: Iterable[str],
        handlers: Mapping[str, Handler],
        sessionmaker: async_sessionmaker[AsyncSession],
        max_attempts: int = 5,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        fetch_max_wait_ms: int = 50,
    ) -> None:
        self.name = name
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._topics = list(topics)
        self._handlers = dict(handlers)
        self._sessionmaker = sessionmaker
        self._max_attempts = max_attempts
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None
        self.running = False

    @property
    def ready(self) -> bool:
        """Started and holding partitions (a fresh group takes a moment to be assigned)."""
        return self.running and self._consumer is not None and bool(self._consumer.assignment())

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=f"{self._group_id}-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5_000,
            # See ServiceSettings.kafka_fetch_max_wait_ms: this bounds the latency of every event hop.
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
        )
        self._consumer = consumer
        try:
            await start_with_retry(consumer, f"consumer {self.name}")
            self.running = True
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=200)
                for records in batches.values():
                    for record in records:
                        await self._handle_record(record)
                if batches:
                    await consumer.commit()
        finally:
            self.running = False
            await consumer.stop()

    async def _handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        raw = record.value
        if raw is None:
            return
        try:
            envelope = event_adapter.validate_json(raw)
        except ValidationError as exc:
            CONSUMED.labels(self.name, "invalid", "rejected").inc()
            log.error(
                "rejected an event that does not match the contracts",
                extra={"topic": record.topic, "offset": record.offset, "error": str(exc)[:500]},
            )
            return
        handler = self._handlers.get(envelope.type)
        if handler is None:
            return
        set_correlation_id(envelope.correlation_id)
        try:
            await self._handle_with_retries(envelope, handler)
        finally:
            set_correlation_id(None)  # the next record, or anything else this task logs, is not this trace

    async def _handle_with_retries(self, envelope: Envelope, handler: Handler) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                with HANDLE_SECONDS.labels(self.name, envelope.type).time():
                    outcome = await self.handle(envelope, handler)
                CONSUMED.labels(self.name, envelope.type, outcome).inc()
                return
            except Exception as exc:
                log.exception(
                    "event handler failed",
                    extra={"event_id": str(envelope.event_id), "type": envelope.type, "attempt": attempt},
                )
                if attempt == self._max_attempts:
                    await self._park(envelope, repr(exc))
                    CONSUMED.labels(self.name, envelope.type, "failed").inc()
                    return
                await asyncio.sleep(0.1 * 2**attempt)

    async def handle(self, envelope: Envelope, handler: Handler) -> str:
        """Apply one event exactly once; returns `done` or `duplicate`."""
        async with unit_of_work(self._sessionmaker) as session:
            inserted = await session.execute(
                text(
                    "INSERT INTO processed_events (consumer, event_id, event_type) VALUES (:c, :e, :t) "
                    "ON CONFLICT DO NOTHING RETURNING event_id"
                ),
                {"c": self._group_id, "e": envelope.event_id, "t": envelope.type},
            )
            if inserted.first() is None:
                return "duplicate"
            await handler(session, envelope)
        return "done"

    async def _park(self, envelope: Envelope, error: str) -> None:
        async with unit_of_work(self._sessionmaker) as session:
            await session.execute(
                text(
                    "INSERT INTO processed_events (consumer, event_id, event_type, status, error) "
                    "VALUES (:c, :e, :t, 'failed', :err) ON CONFLICT DO NOTHING"
                ),
                {"c": self._group_id, "e": envelope.event_id, "t": envelope.type, "err": error[:2000]},
            )
