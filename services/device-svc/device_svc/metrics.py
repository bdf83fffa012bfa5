"""Prometheus metrics of the device gateway."""

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter("pb_device_messages_received_total", "Device MQTT messages received", ["channel"])


@functools.cache
def messages_received(channel: str) -> Any:
    """The channel's child of MESSAGES_RECEIVED: `labels()` on every message was 3 % of device-svc's CPU
    under telemetry load (issue 9)."""
    return MESSAGES_RECEIVED.labels(channel)


MESSAGES_REJECTED = Counter("pb_device_messages_rejected_total", "Device MQTT messages refused, by reason", ["reason"])
MESSAGES_FAILED = Counter(
    "pb_device_messages_failed_total", "Device MQTT messages given up (and acknowledged) after repeated errors"
)
DEVICE_FLOODS = Counter(
    "pb_device_floods_total", "Devices that went over their message budget and were throttled (once per episode)"
)
DEVICES_THROTTLED = Gauge("pb_devices_throttled", "Devices over their message budget now (their excess is dropped)")
MESSAGES_DROPPED = Counter(
    "pb_device_messages_dropped_total", "Device MQTT messages dropped because the device's queue was full"
)
MESSAGES_SUPERSEDED = Counter(
    "pb_device_messages_superseded_total",
    "Presence-only messages (status) skipped because a later message of the same device waited behind them",
)
EJECT_RESULTS = Counter("pb_device_eject_results_total", "Eject results from devices, by outcome", ["outcome"])
COMMANDS_SENT = Counter("pb_device_commands_sent_total", "Eject commands published to devices", ["outcome"])
MQTT_CONNECTED = Gauge("pb_device_mqtt_connected", "1 while device-svc holds the intake's MQTT connection", ["intake"])
RETAINED_STATUS_CURRENT = Counter(
    "pb_device_retained_status_current_total",
    "Retained status messages replayed by the broker on subscribe that matched the registry (no write)",
)
STATE_BATCH_SIZE = Histogram(
    "pb_device_state_batch_size",
    "State messages (status, hello, inventory) per state-batch transaction",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
STATE_BATCH_FALLBACK = Counter(
    "pb_device_state_batch_fallback_total",
    "State messages the batch left to the one-by-one path, by why (a snapshot that changes slots, ...)",
    ["reason"],
)
MQTT_CONNECTS = Counter("pb_device_mqtt_connects_total", "MQTT connections device-svc opened, per intake", ["intake"])
STATE_ROWS_WRITTEN = Counter("pb_device_state_rows_written_total", "Bank current-state rows updated by batch writes")
STATE_WRITES_SKIPPED = Counter(
    "pb_device_state_writes_skipped_total", "Bank reports not written because the stored state was newer"
)
ALARMS_RAISED = Counter("pb_device_alarms_raised_total", "Device alarms raised, by kind", ["kind"])
COMMANDS_DOWN = Counter(
    "pb_device_down_commands_total", "Ring, light and playlist commands, by type and outcome", ["type", "outcome"]
)
TELEMETRY_BATCH_SIZE = Histogram(
    "pb_device_telemetry_batch_size",
    "Heartbeats and bank reports written per telemetry transaction",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
MESSAGES_RETRIED = Counter(
    "pb_device_messages_retried_total", "Device MQTT message handling attempts repeated after an unexpected error"
)
MESSAGES_ACK_STALE = Counter(
    "pb_device_messages_ack_stale_total",
    "Acks not sent because the connection the message came in on had dropped (the broker redelivers it)",
)
VENDOR_FRAMES = Counter(
    "pb_device_vendor_frames_total",
    "Frames of other makers' protocols decoded (result ok) or rejected (result: the decoder's reason)",
    ["protocol", "result"],
)
COMMANDS_NOT_CARRIED = Counter(
    "pb_device_commands_not_carried_total",
    "Platform commands a cabinet's protocol has no equivalent for (not sent)",
    ["protocol", "type"],
)
