"""Outbound partner webhooks (issue 11): partners subscribe to event types (a filter over the
partner-safe events: operations facts, never a user's); every matching event becomes one delivery,
POSTed signed (`signing.py`) with a timestamp, retried with exponential back-off, dead-lettered after
`max_attempts`, replayed by hand; every attempt is logged."""

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics_svc.models import WebhookDelivery, WebhookSubscription
from analytics_svc.webhooks import repository as repo
from analytics_svc.webhooks.signing import sign
from contracts import Envelope, Topic
from kit.db import unit_of_work
from kit.errors import NotFound

log = logging.getLogger(__name__)

# What partners may receive: operations facts that carry no user id (topic, event types).
PARTNER_EVENTS: dict[Topic, tuple[str, ...]] = {
    Topic.HOTSPOTS: ("analytics.hotspot.raised", "analytics.hotspot.cleared"),
    Topic.MAINTENANCE: ("device.maintenance_task.opened", "device.maintenance_task.status_changed"),
    Topic.DEVICE_STATUS: ("device.presence.changed", "device.alarm.raised"),
}
EVENT_TYPES = frozenset(t for types in PARTNER_EVENTS.values() for t in types)


class SubscriptionNotFound(NotFound):
    code = "webhook_subscription_not_found"
    title = "No such webhook subscription"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"
    title = "No such webhook delivery"


@dataclass(frozen=True)
class Policy:
    timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_s: float = 2.0  # before the 2nd attempt; doubled before each next one
    backoff_max_s: float = 3600.0
    batch: int = 50

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt."""
        return timedelta(seconds=min(self.backoff_s * 2 ** (attempts - 1), self.backoff_max_s))


async def subscribe(
    session: AsyncSession, *, partner: str, url: str, event_types: list[str], by: str
) -> WebhookSubscription:
    subscription = WebhookSubscription(
        id=uuid.uuid4(),
        partner=partner,
        url=url,
        secret="whsec_" + secrets.token_urlsafe(32),
        event_types=sorted(set(event_types)),
        active=True,
        created_by=by,
        created_at=datetime.now(UTC),
    )
    session.add(subscription)
    await session.flush()
    log.info("webhook subscription created", extra={"subscription_id": str(subscription.id), "partner": partner})
    return subscription


async def on_event(session: AsyncSession, envelope: Envelope) -> None:
    """A partner-safe event: one delivery per active subscription that asked for its type."""
    now = datetime.now(UTC)
    body = envelope.to_bytes().decode()
    rows = [
        {
            "id": uuid.uuid4(),
            "subscription_id": s.id,
            "event_id": envelope.event_id,
            "event_type": envelope.type,
            "payload": body,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for s in await repo.subscribers(session, envelope.type)
    ]
    await repo.enqueue(session, rows)


async def _post(
    http: httpx.AsyncClient, policy: Policy, delivery: WebhookDelivery, subscription: WebhookSubscription, at: datetime
) -> tuple[int | None, str | None, int]:
    body = delivery.payload.encode()
    headers = {
        "Content-Type": "application/json",
        "X-PB-Signature": sign(subscription.secret, int(at.timestamp()), body),
        "X-PB-Event-Id": str(delivery.event_id),
        "X-PB-Event-Type": delivery.event_type,
        "X-PB-Delivery-Id": str(delivery.id),
    }
    started = time.monotonic()
    try:
        response = await http.post(subscription.url, content=body, headers=headers, timeout=policy.timeout_s)
        return response.status_code, None, round((time.monotonic() - started) * 1000)
    except httpx.TimeoutException:
        return None, "timeout", round((time.monotonic() - started) * 1000)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300], round((time.monotonic() - started) * 1000)


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, policy: Policy, now: datetime | None = None
) -> int:
    """One pass: POST every due delivery (at once), then record each outcome. The rows stay locked for the
    pass (short: `timeout_s` at most), so replicas never send one twice at the same time."""
    now = now or datetime.now(UTC)
    async with unit_of_work(sessionmaker) as session:
        due = await repo.claim_due(session, now, policy.batch)
        outcomes = await asyncio.gather(*(_post(http, policy, d, s, now) for d, s in due))
        for (delivery, _), (code, error, ms) in zip(due, outcomes, strict=True):
            repo.log_attempt(session, delivery.id, now, code, error, ms)
            delivery.attempts += 1
            if code is not None and 200 <= code < 300:
                delivery.status, delivery.delivered_at, delivery.last_error = "delivered", now, None
                continue
            delivery.last_error = error or f"HTTP {code}"
            if delivery.attempts >= policy.max_attempts:
                delivery.status = "dead"
                log.warning(
                    "webhook dead-lettered", extra={"delivery_id": str(delivery.id), "error": delivery.last_error}
                )
            else:
                delivery.next_attempt_at = now + policy.delay(delivery.attempts)
        return len(due)


async def replay(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Send a delivery again (dead-lettered, or delivered and lost on the partner's side), from attempt one."""
    delivery = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise DeliveryNotFound(f"Webhook delivery {delivery_id} does not exist")
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, datetime.now(UTC)
    await session.flush()
    log.info("webhook delivery replayed", extra={"delivery_id": str(delivery_id)})
    return delivery
