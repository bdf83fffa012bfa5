"""Runs device messages concurrently across devices but in arrival order for one device, never
letting one slow or failing message hold up the others. (How many touch the database at once is
the processor's business: telemetry waits for its batch without holding a connection.)

Each message carries its broker acknowledgement, called once its handling is over: committed,
refused (the processor logs, counts and commits that), dropped because the device's queue was full,
or given up after a few attempts (a message that fails by itself). An outage (database or network
unreachable) is not a reason to give up: such a message is retried, with back-off, for as long as
the outage lasts and stays unacknowledged meanwhile, so the broker keeps what arrives behind it.
A message cancelled half-way
(shutdown) is not acknowledged: the broker sends it again to the next connection of our persistent
session."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from device_svc.metrics import MESSAGES_DROPPED, MESSAGES_FAILED, MESSAGES_RETRIED, MESSAGES_SUPERSEDED
from device_svc.mqtt.intake import Intake, device_of_topic, intake_of_topic

log = logging.getLogger(__name__)

# (topic, payload, received at, retained: replayed by the broker on subscribe, not sent just now)
Process = Callable[[str, bytes, datetime, bool], Awaitable[None]]
Ack = Callable[[], None]
Item = tuple[str, bytes, datetime, Ack, bool]

# Messages whose topic names no device share one lane.
NO_DEVICE_LANE = "\x00"


def _no_ack() -> None:
    pass


MAX_OUTAGE_DELAY_S = 5.0


def is_outage(exc: BaseException) -> bool:
    """The database or the network is unreachable: retrying later will work, the message is fine."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # A Kafka error (telemetry goes straight to Kafka) is the broker's state, not the message's.
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError | KafkaError)


class DeviceLanes:
    def __init__(
        self,
        process: Process,
        *,
        max_pending_per_device: int = 100,
        attempts: int = 3,
        retry_delay_s: float = 0.2,
        superseded: Callable[[str], bool] = lambda topic: False,
    ) -> None:
        self._process = process
        # A message on such a topic says nothing once a later one of the same device waits behind it.
        self._superseded = superseded
        self._max_pending = max_pending_per_device
        self._attempts = max(attempts, 1)
        self._retry_delay = retry_delay_s
        self._lanes: dict[str, asyncio.Queue[Item]] = {}
        self._workers: set[asyncio.Task[None]] = set()

    def submit(
        self, topic: str, payload: bytes, received_at: datetime, ack: Ack = _no_ack, retained: bool = False
    ) -> None:
        lane = device_of_topic(topic) or NO_DEVICE_LANE
        queue = self._lanes.get(lane)
        if queue is None:
            queue = asyncio.Queue(maxsize=self._max_pending)
            self._lanes[lane] = queue
            worker = asyncio.create_task(self._drain(lane, queue), name=f"mqtt-lane-{lane}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        try:
            queue.put_nowait((topic, payload, received_at, ack, retained))
        except asyncio.QueueFull:
            MESSAGES_DROPPED.inc()
            log.warning("device queue full; message dropped", extra={"device_id": lane, "mqtt_topic": topic})
            ack()

    async def _drain(self, lane: str, queue: "asyncio.Queue[Item]") -> None:
        try:
            while not queue.empty():
                topic, payload, received_at, ack, retained = queue.get_nowait()
                if not queue.empty() and self._superseded(topic):
                    MESSAGES_SUPERSEDED.inc()
                else:
                    await self._handle(topic, payload, received_at, retained)
                ack()
        finally:
            # No await between the last empty() check and this: nothing can be queued in between.
            if self._lanes.get(lane) is queue:
                del self._lanes[lane]

    async def _handle(self, topic: str, payload: bytes, received_at: datetime, retained: bool) -> None:
        """Process with a few attempts (a deadlock victim, a dropped database connection: every
        attempt rolled back, and a replay is dropped by its msg_id); then give up, so that one poison
        message cannot hold its device's lane and an unacknowledged broker slot for ever."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._process(topic, payload, received_at, retained)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_outage(exc):
                    MESSAGES_RETRIED.inc()
                    log.warning(
                        "device message handling waits for an outage to end",
                        extra={"mqtt_topic": topic, "attempt": attempt, "error": repr(exc)[:300]},
                    )
                    await asyncio.sleep(min(self._retry_delay * 2 ** min(attempt - 1, 10), MAX_OUTAGE_DELAY_S))
                    continue
                if attempt >= self._attempts:
                    MESSAGES_FAILED.inc()
                    log.exception(
                        "device message handling failed; given up", extra={"mqtt_topic": topic, "attempts": attempt}
                    )
                    return
                MESSAGES_RETRIED.inc()
                log.warning(
                    "device message handling failed; retrying",
                    extra={"mqtt_topic": topic, "attempt": attempt, "error": repr(exc)[:300]},
                )
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)


class IntakeLanes:
    """Device lanes per intake (mqtt/intake.py): a device's eject result never queues behind its own
    heartbeat either."""

    def __init__(self, make: Callable[[], DeviceLanes]) -> None:
        self._lanes = {intake: make() for intake in Intake}

    def submit(
        self, topic: str, payload: bytes, received_at: datetime, ack: Ack = _no_ack, retained: bool = False
    ) -> None:
        self._lanes[intake_of_topic(topic)].submit(topic, payload, received_at, ack, retained)

    async def close(self) -> None:
        await asyncio.gather(*(lanes.close() for lanes in self._lanes.values()))
