"""Kafka clients and the idempotent consumer loop."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope, event_adapter
from kit.correlation import set_correlation_id
from kit.db import unit_of_work
from kit.settings import ServiceSettings
from kit.tracing import SpanKind, mark_current_error, span, traceparent_from_headers
from kit.tracing import enabled as tracing_enabled

log = logging.getLogger(__name__)


class _MetadataRequestWithoutAutoCreation(MetadataRequest):  # type: ignore[misc]
    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


# No Kafka client of this process creates a topic by asking for its metadata (aiokafka asks with
# allow_auto_topic_creation true). A broker that creates topics on demand (tansu, or Kafka with
# auto.create.topics.enable) would create them with ITS default partitions (tansu: 4) instead of the
# configured ones, most likely right after it restarted empty: producers would then spread a key over other
# partitions than before, and consumers assigned earlier would miss some. Topics are created by the setup
# (`kafka-setup`) and, where KAFKA_TOPIC_PARTITIONS is set, again by each service (kit.broker_loss).
# aiokafka builds every metadata request through these two names; tansu 0.6 honours the flag (measured).
setattr(aiokafka.client, "MetadataRequest", _MetadataRequestWithoutAutoCreation)  # noqa: B010
setattr(aiokafka.admin.client, "MetadataRequest", _MetadataRequestWithoutAutoCreation)  # noqa: B010

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
# Applies a fetch's new events (already deduplicated by event id, in arrival order) in one transaction: for a
# projection whose per-event transaction would be the bottleneck. Its effect must equal applying the same events
# one at a time with the per-event handlers (they remain the fallback when the batch fails, and the replay path).
BatchHandler = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[None]]


def one_transaction_per_fetch(handlers: Mapping[str, Handler]) -> BatchHandler:
    """A BatchHandler that applies a fetch's events with their own per-event handlers, in arrival order, in the
    fetch's one transaction (ConsumerSpec.one_transaction_per_fetch). Each event in its own transaction costs a
    BEGIN, an insert of its id and a COMMIT (about 2 ms of CPU in the service and a WAL flush in PostgreSQL,
    measured in issue 9): for a projection whose handlers are an upsert or two, that is most of its cost. The
    effect is the per-event one (the same handlers, the same order, each event's correlation id while it is
    applied); if the transaction fails, the kit applies the fetch's events one at a time (retries, parking)."""

    async def apply(session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            handler = handlers.get(envelope.type)
            if handler is None:
                continue
            set_correlation_id(envelope.correlation_id)
            attributes = {"messaging.message.id": str(envelope.event_id), "pb.event.type": envelope.type}
            try:
                with span(
                    f"process {envelope.type}",
                    kind=SpanKind.CONSUMER,
                    parent=envelope.traceparent,
                    attributes=attributes,
                ):
                    await handler(session, envelope)
            finally:
                set_correlation_id(None)

    return apply


CONSUMED = Counter("pb_events_consumed_total", "Events consumed", ["consumer", "type", "outcome"])
HANDLE_SECONDS = Histogram("pb_event_handle_seconds", "Time to handle one event", ["consumer", "type"])
# Records between the last one handled and the partition's high watermark (as of that fetch), per consumer and
# partition: a lag that grows means the consumer falls behind (deploy/observability alerts on it).
# From an event's occurred_at (its producer's clock) to this consumer having handled it: end-to-end latency of
# the hop, e.g. billing-svc's device.bank.returned is the billing stop after the return was recorded.
EVENT_AGE_SECONDS = Histogram(
    "pb_event_age_seconds",
    "From an event's occurred_at to its handling",
    ["consumer", "type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
CONSUMER_LAG = Gauge("pb_consumer_lag", "Records behind the high watermark", ["consumer", "topic", "partition"])
CONSUMER_RESTARTS = Counter(
    "pb_consumer_restarts_total", "Times a consumer's loop died and was started again", ["consumer"]
)
CONSUMER_UP = Gauge("pb_consumer_up", "1 while the consumer's loop runs and holds partitions", ["consumer"])


class ReplayOutcome(StrEnum):
    DONE = "done"  # applied now
    FAILED = "failed"  # the handler failed again: still parked, with the new error
    NOT_PARKED = "not_parked"  # no such parked event for this consumer (or already replayed)
    NO_PAYLOAD = "no_payload"  # parked before the kit kept payloads: only its id and error are known


class LatencyClass(StrEnum):
    """What a consumer's events wait for. CRITICAL: a user holds a request open for them (commands, eject
    results, returns, charges): at rest they keep a short fetch wait. BACKGROUND: projections, inboxes,
    statistics, revocations: at rest they may wait longer, so they cost next to nothing."""

    CRITICAL = "critical"
    BACKGROUND = "background"


@dataclass(frozen=True)
class FetchPacing:
    """How long a fetch may wait at the broker: `flow_wait_ms` while records flow (until `flow_s` after the
    last one), `rest_wait_ms` at rest. `flow_wait_ms` None keeps `rest_wait_ms` always (Apache Kafka answers
    a waiting fetch as soon as data arrives, so a long wait costs nothing there; see ServiceSettings)."""

    rest_wait_ms: int = 500
    flow_wait_ms: int | None = None
    flow_s: float = 10.0

    @classmethod
    def for_class(cls, settings: ServiceSettings, latency: LatencyClass) -> "FetchPacing":
        flow = settings.kafka_fetch_flow_wait_ms
        if latency is LatencyClass.CRITICAL:
            rest = settings.kafka_fetch_max_wait_ms
        else:
            rest = settings.kafka_background_fetch_max_wait_ms
            if flow is not None and settings.kafka_background_fetch_flow_wait_ms is not None:
                flow = settings.kafka_background_fetch_flow_wait_ms
        return cls(rest_wait_ms=rest, flow_wait_ms=flow, flow_s=settings.kafka_fetch_flow_s)


# The consumer's background fetcher wakes this often even with a fetch in flight (aiokafka's default is 200 ms,
# five wake-ups a second per consumer at rest). New data and rebalances wake it anyway.
_FETCHER_TIMEOUT_MS = 2_000
# getmany returns as soon as records arrive; this only bounds how long one call waits at rest (and so how
# often a consumer at rest looks for a log that started again: LogRewind).
_REST_POLL_MS = 5_000
# How long a stopping consumer tries to commit what it handled since its last commit.
_FINAL_COMMIT_S = 2.0

LOG_REWINDS = Counter(
    "pb_consumer_log_rewinds_total",
    "Partitions read again from the beginning: the broker's log started again",
    ["consumer"],
)


class LogRewind:
    """Notices a partition whose log is now shorter than the consumer's position: a broker that lost its
    log (tansu keeps it in memory; a restart empties it). Kafka answers a fetch beyond the end with
    OFFSET_OUT_OF_RANGE and the consumer applies its reset policy; tansu answers with nothing, so a consumer
    would wait at its old position until the new log grew past it (and then skip what came before). A
    consumer group that the restarted broker forgot is rejoined and reset by aiokafka; this covers the rest
    (the seconds before the rejoin, consumers without a group). The position is beyond the fetch's high
    watermark (tansu's is right, unlike its ListOffsets) for `confirm_s` (a new Kafka leader's high watermark
    may lag for a moment): the partition is read again from its beginning; consumers are idempotent."""

    def __init__(self, confirm_s: float = 5.0) -> None:
        self._confirm_s = confirm_s
        self._since: dict[TopicPartition, float] = {}

    def beyond_end(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """The assigned partitions whose position has stayed beyond their end for `confirm_s`."""
        now = time.monotonic()
        assignment = consumer._subscription.subscription
        if assignment is None:
            return []
        found: list[TopicPartition] = []
        seen: set[TopicPartition] = set()
        for tp in consumer.assignment():
            state = assignment.assignment.state_value(tp)
            if state is None or not state.has_valid_position or state.highwater is None:
                continue
            if state.position <= state.highwater:
                continue
            seen.add(tp)
            since = self._since.setdefault(tp, now)
            if now - since >= self._confirm_s:
                found.append(tp)
                log.warning(
                    "a partition's log is shorter than our position: the broker lost it; reading it from the beginning",
                    extra={
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "position": state.position,
                        "high_watermark": state.highwater,
                    },
                )
        self._since = {tp: at for tp, at in self._since.items() if tp in seen and tp not in found}
        return found

    async def rewind(self, consumer: AIOKafkaConsumer, name: str) -> list[TopicPartition]:
        """Seeks the partitions found beyond their end to their beginning; returns them."""
        found = self.beyond_end(consumer)
        if found:
            LOG_REWINDS.labels(name).inc(len(found))
            await consumer.seek_to_beginning(*found)
        return found


class MissingTopics:
    """A subscribed topic the broker does not have (yet): a broker that restarted empty, before the topics are
    created again (kit clients never auto-create them). aiokafka would learn of the topic only at its next
    metadata refresh (`metadata_max_age_ms`, minutes); this asks again every `every_s` while one is missing,
    so the group is rebalanced onto its partitions seconds after it exists."""

    def __init__(self, topics: Iterable[str], every_s: float = 1.0) -> None:
        self._topics = list(topics)
        self._every_s = every_s
        self._last = 0.0

    def refresh_if_missing(self, consumer: AIOKafkaConsumer) -> bool:
        cluster = consumer._client.cluster
        if all(cluster.partitions_for_topic(t) for t in self._topics):
            return False
        now = time.monotonic()
        if now - self._last < self._every_s:
            return False
        self._last = now
        consumer._client.force_metadata_update()
        return True


class FetchWait:
    """Switches a running consumer between the flow and the rest fetch wait. Starts in flow: a consumer
    that just started usually has a backlog, or a caller waiting on its first event."""

    def __init__(self, consumer: AIOKafkaConsumer, pacing: FetchPacing) -> None:
        self._consumer = consumer
        self._pacing = pacing
        self._flow_until = time.monotonic() + pacing.flow_s
        self.wait_ms = pacing.flow_wait_ms if pacing.flow_wait_ms is not None else pacing.rest_wait_ms

    @property
    def flowing(self) -> bool:
        return self._pacing.flow_wait_ms is not None and time.monotonic() < self._flow_until

    def poll_timeout_ms(self) -> int:
        """How long the next getmany may wait: until the flow ends (to switch to the rest wait), or long."""
        if not self.flowing:
            return _REST_POLL_MS
        return max(int((self._flow_until - time.monotonic()) * 1000) + 1, 1)

    def observe(self, got_records: bool) -> None:
        """After each getmany: records keep (or bring back) the flow wait; a quiet flow_s ends it."""
        if self._pacing.flow_wait_ms is None:
            return
        if got_records:
            self._flow_until = time.monotonic() + self._pacing.flow_s
        self._apply(self._pacing.flow_wait_ms if self.flowing else self._pacing.rest_wait_ms)

    def _apply(self, wait_ms: int) -> None:
        if wait_ms == self.wait_ms:
            return
        self.wait_ms = wait_ms
        # aiokafka reads this for every fetch request it builds (Fetcher._get_actions_per_node); it has no
        # public setter. The fetch already in flight keeps its wait. kit's tests check the switch works.
        fetcher = self._consumer._fetcher
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = wait_ms


def consumer_options(pacing: FetchPacing) -> dict[str, int]:
    """The fetch options every consumer of the kit starts with (see FetchWait)."""
    return {
        "fetch_max_wait_ms": pacing.flow_wait_ms if pacing.flow_wait_ms is not None else pacing.rest_wait_ms,
        "consumer_timeout_ms": _FETCHER_TIMEOUT_MS,
    }


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
        pacing: FetchPacing | None = None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 200,
        metadata_max_age_ms: int = 300_000,
        commit_interval_s: float = 1.0,
    ) -> None:
        self.name = name
        self._commit_interval_s = commit_interval_s
        self._metadata_max_age_ms = metadata_max_age_ms
        self._batch_handler = batch_handler
        self._max_records = max_records
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._topics = list(topics)
        self._handlers = dict(handlers)
        self._sessionmaker = sessionmaker
        self._max_attempts = max_attempts
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._pacing = pacing or FetchPacing()
        self._consumer: AIOKafkaConsumer | None = None
        self.fetch_wait: FetchWait | None = None
        self.running = False
        self.restarts = 0  # times run_supervised started the loop again after it died
        self.last_error: str | None = None  # why the loop last died (None once it runs again)

    @property
    def ready(self) -> bool:
        """Started and holding partitions (a fresh group takes a moment to be assigned)."""
        return self.running and self._consumer is not None and bool(self._consumer.assignment())

    async def run_supervised(self, *, backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        """Run the loop, and start it again whenever it dies (a database gone while it parked an event, a
        broker away longer than the start's retries, a bug): waiting `backoff_s`, doubled after each death
        up to `max_backoff_s`, back to `backoff_s` once a loop ran a minute. Offsets are committed only
        after their effects, so a restarted loop reads again what the dead one had not finished; duplicates
        are dropped. Visible as `pb_consumer_restarts_total`, `pb_consumer_up` and in /readyz."""
        delay = backoff_s
        while True:
            started = time.monotonic()
            try:
                await self.run()
                raise RuntimeError("the consumer loop returned")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = repr(exc)[:500]
                self.restarts += 1
                CONSUMER_RESTARTS.labels(self.name).inc()
                if time.monotonic() - started >= 60:
                    delay = backoff_s
                log.error(
                    "consumer %s died; starting it again in %.1f s",
                    self.name,
                    delay,
                    exc_info=exc,
                    extra={"consumer": self.name, "restarts": self.restarts},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_backoff_s)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=f"{self._group_id}-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=self._metadata_max_age_ms,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
            # The fetch wait bounds the latency of every event hop on a broker that does not answer a waiting
            # fetch when data arrives (tansu): see FetchWait and ServiceSettings.kafka_fetch_flow_wait_ms.
            **consumer_options(self._pacing),
        )
        self._consumer = consumer
        # The next offset of each partition whose fetched events all took effect, not committed yet.
        handled: dict[TopicPartition, int] = {}
        try:
            await start_with_retry(consumer, f"consumer {self.name}")
            fetch_wait = self.fetch_wait = FetchWait(consumer, self._pacing)
            rewind = LogRewind()
            missing_topics = MissingTopics(self._topics)
            self.running = True
            self.last_error = None
            next_commit = 0.0
            while True:
                CONSUMER_UP.labels(self.name).set(1 if self.ready else 0)
                timeout_ms = fetch_wait.poll_timeout_ms()
                if handled:  # back in time to commit them
                    timeout_ms = max(1, min(timeout_ms, int((next_commit - time.monotonic()) * 1000) + 1))
                batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
                # Before handling: the fetcher sends the next request while the handlers await the database.
                fetch_wait.observe(bool(batches))
                if self._batch_handler is not None:
                    await self._handle_batch([record for records in batches.values() for record in records])
                for partition, records in batches.items():
                    if self._batch_handler is None:
                        for record in records:
                            await self._handle_record(record)
                    if records:
                        handled[partition] = records[-1].offset + 1
                    highwater = consumer.highwater(partition)
                    if records and highwater is not None:
                        lag = max(0, highwater - records[-1].offset - 1)
                        CONSUMER_LAG.labels(self.name, partition.topic, str(partition.partition)).set(lag)
                # The positions are committed at most every commit_interval_s (each commit is a request the
                # broker answers: about 0.3 ms of CPU between the two, measured in issue 9), and only for
                # events whose effects committed. What a restart or a rebalance reads again is a duplicate.
                if handled and time.monotonic() >= next_commit:
                    await self._commit(consumer, handled)
                    handled = {}
                    next_commit = time.monotonic() + self._commit_interval_s
                for partition in await rewind.rewind(consumer, self.name):
                    handled.pop(partition, None)  # its log started again: our offsets no longer mean anything
                missing_topics.refresh_if_missing(consumer)
        finally:
            self.running = False
            CONSUMER_UP.labels(self.name).set(0)
            if handled:  # only batches handled to the end: an event cut off by the stop comes again
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._commit(consumer, handled), _FINAL_COMMIT_S)
            await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the offsets of the partitions still assigned to us; a commit the broker refuses (a restarted
        broker forgot our group: the consumer rejoins) is not fatal: the events after the last commit come
        again and are duplicates. A partition taken away by a rebalance is read again by its new owner from
        its last commit, which is the same."""
        assigned = consumer.assignment()
        ours = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not ours:
            return
        try:
            await consumer.commit(ours)
        except (CommitFailedError, KafkaError) as exc:
            log.warning(
                "offset commit failed; the events since the last commit may come again", extra={"error": repr(exc)}
            )

    def _parse(self, record: ConsumerRecord[bytes, bytes]) -> tuple[Envelope, Handler] | None:
        """The record's envelope and its handler; None for a tombstone, an invalid event or an unhandled type."""
        raw = record.value
        if raw is None:
            return None
        try:
            envelope = event_adapter.validate_json(raw)
        except ValidationError as exc:
            CONSUMED.labels(self.name, "invalid", "rejected").inc()
            log.error(
                "rejected an event that does not match the contracts",
                extra={"topic": record.topic, "offset": record.offset, "error": str(exc)[:500]},
            )
            return None
        handler = self._handlers.get(envelope.type)
        return None if handler is None else (envelope, handler)

    async def _handle_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """A fetch's events in one transaction; if that fails, each one on its own (retries, parking)."""
        parsed = [(record, found) for record in records if (found := self._parse(record)) is not None]
        if not parsed:
            return
        envelopes = [envelope for _, (envelope, _) in parsed]
        try:
            with HANDLE_SECONDS.labels(self.name, "batch").time():
                fresh = await self.handle_batch(envelopes)
        except Exception:
            log.exception("batch failed; applying its events one at a time", extra={"events": len(envelopes)})
            for record, (envelope, handler) in parsed:
                await self._handle_one(record, envelope, handler)
            return
        now = datetime.now(UTC)
        for envelope in envelopes:
            new = envelope.event_id in fresh
            CONSUMED.labels(self.name, envelope.type, "done" if new else "duplicate").inc()
            if new:
                EVENT_AGE_SECONDS.labels(self.name, envelope.type).observe(
                    max(0.0, (now - envelope.occurred_at).total_seconds())
                )

    async def handle_batch(self, envelopes: Sequence[Envelope]) -> set[UUID]:
        """Apply the events not seen before, once, in one transaction with their ids; returns their ids."""
        assert self._batch_handler is not None
        async with unit_of_work(self._sessionmaker) as session:
            inserted = await session.execute(
                text(
                    "INSERT INTO processed_events (consumer, event_id, event_type) "
                    "SELECT :c, e, t FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[])) AS u(e, t) "
                    "ON CONFLICT DO NOTHING RETURNING event_id"
                ),
                {"c": self._group_id, "ids": [e.event_id for e in envelopes], "types": [e.type for e in envelopes]},
            )
            fresh = {row[0] for row in inserted.all()}
            firsts: dict[UUID, Envelope] = {}
            for envelope in envelopes:
                if envelope.event_id in fresh:
                    firsts.setdefault(envelope.event_id, envelope)
            if firsts:
                await self._batch_handler(session, list(firsts.values()))
        return fresh

    async def _handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        found = self._parse(record)
        if found is not None:
            await self._handle_one(record, *found)

    async def _handle_one(self, record: ConsumerRecord[bytes, bytes], envelope: Envelope, handler: Handler) -> None:
        set_correlation_id(envelope.correlation_id)
        try:
            if tracing_enabled():
                await self._handle_traced(record, envelope, handler)
            else:
                await self._handle_with_retries(envelope, handler)
        finally:
            set_correlation_id(None)  # the next record, or anything else this task logs, is not this trace

    async def _handle_traced(self, record: ConsumerRecord[bytes, bytes], envelope: Envelope, handler: Handler) -> None:
        """The handling as a consumer span continuing the producer's trace (its record header, else the
        envelope's field): the events the handler writes carry this span on."""
        parent = traceparent_from_headers(record.headers) or envelope.traceparent
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": self._group_id,
            "messaging.message.id": str(envelope.event_id),
            "pb.event.type": envelope.type,
        }
        if envelope.correlation_id is not None:
            attributes["pb.correlation_id"] = envelope.correlation_id
        with span(f"process {envelope.type}", kind=SpanKind.CONSUMER, parent=parent, attributes=attributes):
            await self._handle_with_retries(envelope, handler)

    async def _handle_with_retries(self, envelope: Envelope, handler: Handler) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                with HANDLE_SECONDS.labels(self.name, envelope.type).time():
                    outcome = await self.handle(envelope, handler)
                CONSUMED.labels(self.name, envelope.type, outcome).inc()
                if outcome == "done":
                    age = (datetime.now(UTC) - envelope.occurred_at).total_seconds()
                    EVENT_AGE_SECONDS.labels(self.name, envelope.type).observe(max(0.0, age))
                return
            except Exception as exc:
                log.exception(
                    "event handler failed",
                    extra={"event_id": str(envelope.event_id), "type": envelope.type, "attempt": attempt},
                )
                if attempt == self._max_attempts:
                    mark_current_error(f"parked after {attempt} attempts: {exc!r}"[:200])
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

    @property
    def group_id(self) -> str:
        return self._group_id

    async def _park(self, envelope: Envelope, error: str) -> None:
        """Keep the event (its envelope, to replay it) and the last error; its id now counts as seen, so
        the consumer moves on. `kit.parked` lists parked events and replays them once the cause is fixed."""
        async with unit_of_work(self._sessionmaker) as session:
            await session.execute(
                text(
                    "INSERT INTO processed_events (consumer, event_id, event_type, status, error, payload) "
                    "VALUES (:c, :e, :t, 'failed', :err, :p) ON CONFLICT DO NOTHING"
                ),
                {
                    "c": self._group_id,
                    "e": envelope.event_id,
                    "t": envelope.type,
                    "err": error[:2000],
                    "p": envelope.to_bytes(),
                },
            )
        log.error(
            "event parked after %d attempts",
            self._max_attempts,
            extra={"event_id": str(envelope.event_id), "type": envelope.type, "consumer": self._group_id},
        )

    async def replay(self, event_id: UUID) -> ReplayOutcome:
        """Apply a parked event again, once: its handler's effect and the row's `done` commit together.
        A handler that fails again leaves it parked, with the new error."""
        try:
            async with unit_of_work(self._sessionmaker) as session:
                row = (
                    await session.execute(
                        text(
                            "SELECT payload FROM processed_events "
                            "WHERE consumer = :c AND event_id = :e AND status = 'failed' FOR UPDATE"
                        ),
                        {"c": self._group_id, "e": event_id},
                    )
                ).first()
                if row is None:
                    return ReplayOutcome.NOT_PARKED
                if row.payload is None:
                    return ReplayOutcome.NO_PAYLOAD  # parked before payloads were kept
                envelope = event_adapter.validate_json(row.payload)
                await session.execute(
                    text(
                        "UPDATE processed_events SET status = 'done', error = NULL, payload = NULL, "
                        "processed_at = now() WHERE consumer = :c AND event_id = :e"
                    ),
                    {"c": self._group_id, "e": event_id},
                )
                handler = self._handlers.get(envelope.type)
                if handler is not None:
                    set_correlation_id(envelope.correlation_id)
                    await handler(session, envelope)
        except Exception as exc:
            log.exception("replay of a parked event failed", extra={"event_id": str(event_id)})
            async with unit_of_work(self._sessionmaker) as session:
                await session.execute(
                    text(
                        "UPDATE processed_events SET error = :err "
                        "WHERE consumer = :c AND event_id = :e AND status = 'failed'"
                    ),
                    {"c": self._group_id, "e": event_id, "err": repr(exc)[:2000]},
                )
            CONSUMED.labels(self.name, "replay", "failed").inc()
            return ReplayOutcome.FAILED
        finally:
            set_correlation_id(None)
        CONSUMED.labels(self.name, envelope.type, "replayed").inc()
        log.info("parked event replayed", extra={"event_id": str(event_id), "type": envelope.type})
        return ReplayOutcome.DONE
