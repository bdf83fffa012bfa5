"""Runs device messages concurrently across devices but in arrival order for one device, never
letting one slow or failing message hold up the others. (How many touch the database at once is
the processor's business: telemetry waits for its batch without holding a connection.)"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from contracts.mqtt import parse_up_topic
from device_svc.metrics import MESSAGES_DROPPED, MESSAGES_FAILED

log = logging.getLogger(__name__)

Process = Callable[[str, bytes, datetime], Awaitable[None]]
Item = tuple[str, bytes, datetime]

# Messages whose topic names no device share one lane.
NO_DEVICE_LANE = "\x00"


class DeviceLanes:
    def __init__(self, process: Process, *, max_pending_per_device: int = 100) -> None:
        self._process = process
        self._max_pending = max_pending_per_device
        self._lanes: dict[str, asyncio.Queue[Item]] = {}
        self._workers: set[asyncio.Task[None]] = set()

    def submit(self, topic: str, payload: bytes, received_at: datetime) -> None:
        parsed = parse_up_topic(topic)
        lane = parsed[0] if parsed is not None else NO_DEVICE_LANE
        queue = self._lanes.get(lane)
        if queue is None:
            queue = asyncio.Queue(maxsize=self._max_pending)
            self._lanes[lane] = queue
            worker = asyncio.create_task(self._drain(lane, queue), name=f"mqtt-lane-{lane}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        try:
            queue.put_nowait((topic, payload, received_at))
        except asyncio.QueueFull:
            MESSAGES_DROPPED.inc()
            log.warning("device queue full; message dropped", extra={"device_id": lane, "mqtt_topic": topic})

    async def _drain(self, lane: str, queue: "asyncio.Queue[Item]") -> None:
        try:
            while not queue.empty():
                topic, payload, received_at = queue.get_nowait()
                try:
                    await self._process(topic, payload, received_at)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    MESSAGES_FAILED.inc()
                    log.exception("device message handling failed", extra={"mqtt_topic": topic})
        finally:
            # No await between the last empty() check and this: nothing can be queued in between.
            if self._lanes.get(lane) is queue:
                del self._lanes[lane]

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
