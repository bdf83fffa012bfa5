"""Instant access-token revocation across services. user-svc publishes `user.session.revoked` (token
ids and when they expire anyway) on `user.sessions.v1`; every process of every service reads that topic
itself, without a consumer group (a group would hand each event to one replica only), and
`TokenVerifier` refuses the listed ids. A process that starts later reads back `lookback_s` by
timestamp (ListOffsets), so it knows what was revoked before it started. Entries leave memory when
the tokens would have expired, so the list stays as small as the revocations of one token lifetime."""

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter
from pydantic import ValidationError

from contracts import Topic, event_adapter
from contracts.events import SessionRevoked
from kit.kafka import FetchPacing, FetchWait, LogRewind, consumer_options, start_with_retry

log = logging.getLogger(__name__)

REVOCATIONS = Counter("pb_token_revocations_total", "Access-token ids put on this process's denylist")

_SWEEP_INTERVAL_S = 30.0


class RevocationList:
    """Revoked access-token ids (`jti`) until their tokens expire."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._next_sweep = 0.0

    def add(self, token_ids: Iterable[str], expires_at: datetime) -> None:
        until = expires_at.timestamp()
        if until <= time.time():
            return
        for token_id in token_ids:
            self._expiry[token_id] = max(until, self._expiry.get(token_id, 0.0))
            REVOCATIONS.inc()

    def is_revoked(self, token_id: str) -> bool:
        now = time.time()
        if now >= self._next_sweep:
            self._sweep(now)
        until = self._expiry.get(token_id)
        return until is not None and until > now

    def __len__(self) -> int:
        return len(self._expiry)

    def _sweep(self, now: float) -> None:
        self._expiry = {jti: until for jti, until in self._expiry.items() if until > now}
        self._next_sweep = now + _SWEEP_INTERVAL_S


class RevocationListener:
    """Feeds a RevocationList from `user.sessions.v1`. `caught_up` is set once everything published
    before the start (within `lookback_s`) has been read."""

    def __init__(
        self,
        revocations: RevocationList,
        *,
        bootstrap: str,
        client_id: str,
        lookback_s: float,
        pacing: FetchPacing | None = None,
        topic: str = Topic.SESSIONS.value,
    ) -> None:
        self._revocations = revocations
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._lookback_s = lookback_s
        self._pacing = pacing or FetchPacing()
        self._topic = topic
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            client_id=f"{self._client_id}-revocations",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # the broker lost our position (e.g. a restarted broker): read it all
            **consumer_options(self._pacing),
        )
        await start_with_retry(consumer, "revocation listener")
        fetch_wait = FetchWait(consumer, self._pacing)
        rewind = LogRewind()
        try:
            partitions = await self._assign(consumer)
            ends = await consumer.end_offsets(partitions)
            pending = {tp: end for tp, end in ends.items() if await consumer.position(tp) < end}
            if not pending:
                self.caught_up.set()
            while True:
                # While catching up, the positions are checked at least twice a second.
                timeout_ms = min(fetch_wait.poll_timeout_ms(), 500) if pending else fetch_wait.poll_timeout_ms()
                batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=500)
                fetch_wait.observe(bool(batches))
                for records in batches.values():
                    for record in records:
                        self._apply(record.value)
                await rewind.rewind(consumer, "revocations")
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= pending[tp]:
                            del pending[tp]
                    if not pending:
                        self.caught_up.set()
                        log.info("revocations caught up", extra={"revoked_tokens": len(self._revocations)})
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Assign every partition of the topic and seek back `lookback_s`. A topic that does not exist
        yet holds no revocations: caught up at once, and read from its beginning once it appears."""
        delay = 0.5
        while True:
            await consumer.topics()  # refreshes the metadata of every topic
            numbers = consumer.partitions_for_topic(self._topic)
            if numbers:
                break
            self.caught_up.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        partitions = [TopicPartition(self._topic, n) for n in sorted(numbers)]
        consumer.assign(partitions)
        if self.caught_up.is_set():
            await consumer.seek_to_beginning(*partitions)
            return partitions
        since_ms = int((time.time() - self._lookback_s) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            at = found.get(tp)
            # No record at or after the time: start at the end. (tansu answers offset 0 with timestamp -1
            # instead of Kafka's "none".)
            consumer.seek(tp, ends[tp] if at is None or at.timestamp < 0 else at.offset)
        return partitions

    def _apply(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            envelope = event_adapter.validate_json(raw)
        except ValidationError:
            log.warning("ignored a message on the revocations topic that does not match the contracts")
            return
        if isinstance(envelope.data, SessionRevoked):
            self._revocations.add(envelope.data.token_ids, envelope.data.expires_at)
