"""Telephony providers. The interface has the shape of the real ones (Twilio, Aliyun voice, Tencent
Cloud CCC): `place_call` answers at once with the provider's call id, or refuses the number; the outcome
(answered, no answer, failed) comes later as a signed HTTP callback to `/v1/telephony/events`, retried
until it is acknowledged. The sandbox behaves that way: it rings for a moment, then POSTs the signed
outcome through an HTTP client (tests give it the app itself).

Sandbox numbers: ending in 1, nobody answers; ending in 2, the call fails on the network; ending in
9, the provider refuses the number at once; any other is answered."""

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Telephony-Signature"
TIMESTAMP_HEADER = "X-Telephony-Timestamp"
EVENTS_PATH = "/v1/telephony/events"
MAX_SKEW_S = 300  # an older (or future) callback is refused: a replay


class CallRefused(Exception):
    """The provider will not place this call (an invalid or barred number)."""


class TelephonyUnavailable(Exception):
    """The provider could not be reached; nothing was placed."""


class TelephonyProvider(Protocol):
    async def place_call(self, to: str, reference: str) -> str:
        """Start a call to `to`; the provider's call id. `reference` comes back with the outcome."""
        ...


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str | None, body: bytes, signature: str | None, now: float) -> bool:
    if not timestamp or not signature:
        return False
    try:
        if abs(now - int(timestamp)) > MAX_SKEW_S:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature.strip().lower())


class SandboxTelephony:
    def __init__(
        self,
        secret: bytes,
        http: httpx.AsyncClient,
        *,
        ring_s: tuple[float, float] = (0.05, 0.2),
        notify_attempts: int = 5,
        rng: random.Random | None = None,
    ) -> None:
        self._secret = secret
        self._http = http
        self._ring = ring_s
        self._attempts = notify_attempts
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    async def place_call(self, to: str, reference: str) -> str:
        if to.endswith("9"):
            raise CallRefused("the number is not reachable by this provider")
        call_id = f"sbx-call-{uuid.uuid4().hex[:16]}"
        outcome = "no_answer" if to.endswith("1") else "failed" if to.endswith("2") else "answered"
        event: dict[str, Any] = {
            "call_id": call_id,
            "reference": reference,
            "outcome": outcome,
            "duration_s": self._rng.randint(30, 300) if outcome == "answered" else 0,
            "failure": "network_error" if outcome == "failed" else None,
            "at": datetime.now(UTC).isoformat(),
        }
        task = asyncio.create_task(self._report(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call_id

    async def _report(self, event: dict[str, Any]) -> None:
        await asyncio.sleep(self._rng.uniform(*self._ring))
        body = json.dumps(event, separators=(",", ":")).encode()
        for attempt in range(self._attempts):
            timestamp = str(int(time.time()))
            headers = {
                SIGNATURE_HEADER: sign(self._secret, timestamp, body),
                TIMESTAMP_HEADER: timestamp,
                "Content-Type": "application/json",
            }
            try:
                response = await self._http.post(EVENTS_PATH, content=body, headers=headers)
                if response.is_success:
                    return
            except httpx.HTTPError as exc:
                log.warning("telephony callback not delivered", extra={"error": repr(exc)})
            await asyncio.sleep(0.2 * 2**attempt)
        log.error("telephony callback given up", extra={"call_id": event["call_id"]})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
