"""A noisy device is throttled, alone (issue 15, denial of service): each device has its own budget of
messages (a token bucket: `rate_per_s` sustained, `burst` at once), checked as a message arrives, before it
is queued or parsed. Past it, the device's messages are acknowledged and dropped, counted as rejected with
the reason `throttled` (pb_device_messages_rejected_total), so a flooding cabinet costs the platform a
dictionary lookup per message and never a database round trip, and the other devices' lanes and batches
never wait behind it.

What a user or a rental waits for is never dropped: eject results and returns (and a maker's messages on
its critical topic, which carry them) pass whatever the budget says; they still use it up, so the device's
telemetry behind them is what gives way. A device coming back after an outage sends its backlog at once:
`burst` is sized for that catch-up.

A throttled device is one episode: it is logged once when it starts (a warning with the channel that broke
the budget), `on_flood` is called once (device-svc raises a `flooding` alarm on device.alarm.raised and
pb_device_floods_total counts it), and once the device has been within its budget again long enough to refill
it, the end is logged once with how many messages were dropped. Budgets are per device-svc instance: with a
shared subscription across N instances each sees about 1/N of a device's messages, so the fleet-wide
ceiling is about N times the budget."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from contracts.mqtt import UpChannel, parse_up_topic
from device_svc.metrics import DEVICE_FLOODS, DEVICES_THROTTLED, MESSAGES_REJECTED
from device_svc.protocols.registry import vendor_route

log = logging.getLogger("device_svc.mqtt.handlers")

# Never dropped: a user's eject and a rental's end depend on them.
EXEMPT_CHANNELS = frozenset({UpChannel.EJECT_RESULT.value, UpChannel.RETURN.value})


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    dropped: int = 0  # in the current episode; 0: not throttled


def device_and_exemption(topic: str) -> tuple[str | None, bool]:
    """The device a topic is of, and whether its messages pass whatever the budget says."""
    parsed = parse_up_topic(topic)
    if parsed is not None:
        return parsed[0], parsed[1] in EXEMPT_CHANNELS
    vendor = vendor_route(topic)
    if vendor is not None:
        return vendor[1], vendor[2] == "critical"
    return None, False


class DeviceThrottle:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        on_flood: Callable[[str, str], None] = lambda device_id, topic: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(max(burst, 1))
        self._on_flood = on_flood
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def admit(self, topic: str) -> bool:
        """False: drop this message (acknowledge it and do nothing else)."""
        if not self.enabled:
            return True
        device_id, exempt = device_and_exemption(topic)
        if device_id is None:
            return True  # no device: the intake refuses it, counted there
        now = self._clock()
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = self._buckets[device_id] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
            bucket.at = now
            if bucket.dropped and bucket.tokens >= self.burst:
                self._ended(device_id, bucket)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        if exempt:
            bucket.tokens = max(bucket.tokens - 1.0, -self.burst)  # owed: what follows it waits longer
            return True
        MESSAGES_REJECTED.labels("throttled").inc()
        if not bucket.dropped:
            DEVICE_FLOODS.inc()
            DEVICES_THROTTLED.inc()
            log.warning(
                "device message rejected",
                extra={
                    "device_id": device_id,
                    "mqtt_topic": topic[:200],
                    "reason": "throttled",
                    "detail": f"over its budget of {self.rate_per_s:g}/s (burst {self.burst:g}); "
                    "further messages are dropped until it keeps within it",
                },
            )
            self._on_flood(device_id, topic)
        bucket.dropped += 1
        return False

    def sweep(self) -> None:
        """End the episodes of devices back within budget, and forget full buckets (a device that sends
        nothing keeps no memory here)."""
        now = self._clock()
        for device_id, bucket in list(self._buckets.items()):
            if min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s) >= self.burst:
                if bucket.dropped:
                    self._ended(device_id, bucket)
                del self._buckets[device_id]

    def throttled(self) -> dict[str, int]:
        """Devices in an episode now, with the messages dropped so far."""
        return {device_id: b.dropped for device_id, b in self._buckets.items() if b.dropped}

    def _ended(self, device_id: str, bucket: _Bucket) -> None:
        DEVICES_THROTTLED.dec()
        log.warning(
            "device flood ended",
            extra={"device_id": device_id, "reason": "throttled", "dropped": bucket.dropped},
        )
        bucket.dropped = 0
