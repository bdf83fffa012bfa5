"""Push providers. The interface has the shape of the real ones (APNs, FCM): a batch of messages, each
to one device token, a payload size limit, and a result per token, of which `invalid_token` means the
app was uninstalled or the token rotated (the caller unregisters it) and `unavailable` a passing failure
(the caller tries again later). The sandbox behaves like a real provider: latency, transient failures,
and tokens it does not know; it keeps what it "delivered" for tests and the demo."""

import asyncio
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

MAX_PAYLOAD_BYTES = 4096  # APNs and FCM both refuse larger notification payloads


class PushStatus(StrEnum):
    OK = "ok"
    INVALID_TOKEN = "invalid_token"
    UNAVAILABLE = "unavailable"
    PAYLOAD_TOO_LARGE = "payload_too_large"


@dataclass(frozen=True)
class PushMessage:
    token: str
    platform: str
    title: str
    body: str
    data: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return json.dumps(
            {"title": self.title, "body": self.body, "data": self.data}, ensure_ascii=False, separators=(",", ":")
        ).encode()


@dataclass(frozen=True)
class PushResult:
    token: str
    status: PushStatus


class PushProvider(Protocol):
    async def send(self, messages: list[PushMessage]) -> list[PushResult]:
        """One result per message, in order; raises only when the provider cannot be reached at all."""
        ...


def fit(title: str, body: str, data: dict[str, str], limit: int = MAX_PAYLOAD_BYTES) -> str:
    """`body` shortened (with an ellipsis) until the payload fits `limit` bytes."""
    probe = PushMessage(token="", platform="", title=title, body=body, data=data)
    if len(probe.payload()) <= limit:
        return body
    low, high = 0, len(body)
    while low < high:  # the longest prefix that fits
        mid = (low + high + 1) // 2
        candidate = PushMessage(token="", platform="", title=title, body=body[:mid] + "…", data=data)
        if len(candidate.payload()) <= limit:
            low = mid
        else:
            high = mid - 1
    return body[:low] + "…"


@dataclass
class SandboxDelivery:
    token: str
    platform: str
    title: str
    body: str
    data: dict[str, str]
    at: datetime


class SandboxPushProvider:
    """Tokens starting `invalid-` are unknown to it (as after an uninstall); `flaky-` tokens always answer
    `unavailable`, any other at `failure_rate`; every batch takes between `latency_s` seconds."""

    def __init__(
        self,
        *,
        latency_s: tuple[float, float] = (0.01, 0.05),
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self._latency = latency_s
        self._failure_rate = failure_rate
        self._rng = rng or random.Random()
        self.delivered: list[SandboxDelivery] = []

    async def send(self, messages: list[PushMessage]) -> list[PushResult]:
        await asyncio.sleep(self._rng.uniform(*self._latency))
        results = []
        for message in messages:
            if len(message.payload()) > MAX_PAYLOAD_BYTES:
                status = PushStatus.PAYLOAD_TOO_LARGE
            elif message.token.startswith("invalid-"):
                status = PushStatus.INVALID_TOKEN
            elif message.token.startswith("flaky-") or self._rng.random() < self._failure_rate:
                status = PushStatus.UNAVAILABLE
            else:
                status = PushStatus.OK
                self.delivered.append(
                    SandboxDelivery(
                        message.token, message.platform, message.title, message.body, message.data, datetime.now(UTC)
                    )
                )
            results.append(PushResult(message.token, status))
        return results
