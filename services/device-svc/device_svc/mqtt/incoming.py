"""A device message as it arrived, and how a refusal is logged and counted."""

import logging
from dataclasses import dataclass
from datetime import datetime

from device_svc.metrics import MESSAGES_REJECTED

log = logging.getLogger("device_svc.mqtt.handlers")


@dataclass(frozen=True)
class Incoming:
    topic: str
    device_id: str
    channel: str
    received_at: datetime


def count_rejection(device_id: str | None, topic: str, reason: str, detail: str = "") -> None:
    MESSAGES_REJECTED.labels(reason).inc()
    log.warning(
        "device message rejected",
        extra={"device_id": device_id, "mqtt_topic": topic[:200], "reason": reason, "detail": detail[:300]},
    )
