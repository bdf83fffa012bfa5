"""Outbound partner webhooks (issue 11): partners subscribe to event types (a filter over the
partner-safe events: operations facts, never a user's); every matching event becomes one delivery,
POSTed signed (`signing.py`) with a timestamp, retried with exponential back-off, dead-lettered after
`max_attempts`, replayed by hand; every attempt is logged. Only public addresses receive them (`egress.py`:
checked at registration and at every delivery), and each partner has a rate limit (`WebhookPartnerLimit`)."""

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics_svc.models import WebhookDelivery, WebhookPartnerLimit, WebhookSubscription
from analytics_svc.webhooks import egress
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
    # Refused in production (settings): local and test stacks send to receivers on this machine.
    allow_loopback: bool = False
    partner_per_minute: int = 600  # a partner without its own limit

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt."""
        return timedelta(seconds=min(self.backoff_s * 2 ** (attempts - 1), self.backoff_max_s))


async def subscribe(
    session: AsyncSession,
    *,
    partner: str,
    url: str,
    event_types: list[str],
    by: str,
    allow_loopback: bool,
    resolver: egress.Resolver = egress.resolve,
) -> WebhookSubscription:
    await egress.check(url, allow_loopback=allow_loopback, resolver=resolver)
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
    http: httpx.AsyncClient,
    policy: Policy,
    delivery: WebhookDelivery,
    subscription: WebhookSubscription,
    at: datetime,
    resolver: egress.Resolver,
) -> tuple[int | None, str | None, int]:
    started = time.monotonic()
    try:
        # Resolved again now and sent to the address checked: the name may point elsewhere since registration.
        target = await egress.check(subscription.url, allow_loopback=policy.allow_loopback, resolver=resolver)
    except egress.WebhookUrlRefused as exc:
        log.warning("webhook refused", extra={"delivery_id": str(delivery.id), "error": exc.detail})
        return None, f"refused: {exc.detail}"[:300], round((time.monotonic() - started) * 1000)
    body = delivery.payload.encode()
    headers = {
        "Host": target.host,
        "Content-Type": "application/json",
        "X-PB-Signature": sign(subscription.secret, int(at.timestamp()), body),
        "X-PB-Event-Id": str(delivery.event_id),
        "X-PB-Event-Type": delivery.event_type,
        "X-PB-Delivery-Id": str(delivery.id),
    }
    try:
        response = await http.post(
            target.url,
            content=body,
            headers=headers,
            timeout=policy.timeout_s,
            follow_redirects=False,  # a redirect could lead anywhere: a 3xx is a failed attempt
            extensions={"sni_hostname": target.sni},
        )
        return response.status_code, None, round((time.monotonic() - started) * 1000)
    except httpx.TimeoutException:
        return None, "timeout", round((time.monotonic() - started) * 1000)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300], round((time.monotonic() - started) * 1000)


def _allowance(bucket: WebhookPartnerLimit, policy: Policy, now: datetime) -> int:
    """Refill the partner's bucket up to `now` and answer how many requests it may send."""
    per_s = (bucket.per_minute or policy.partner_per_minute) / 60
    capacity = max(1.0, per_s)
    elapsed = max(0.0, (now - bucket.refilled_at).total_seconds())
    bucket.tokens = min(capacity, bucket.tokens + elapsed * per_s)
    bucket.refilled_at = max(now, bucket.refilled_at)
    return int(bucket.tokens)


async def _claim(
    session: AsyncSession, policy: Policy, now: datetime
) -> list[tuple[WebhookDelivery, WebhookSubscription]]:
    """Due deliveries within each partner's budget (spent here), at most `policy.batch` in all."""
    claimed: list[tuple[WebhookDelivery, WebhookSubscription]] = []
    partners = await repo.due_partners(session, now)
    buckets = {b.partner: b for b in await repo.lock_limits(session, partners, now)}
    for partner in partners:
        bucket = buckets.get(partner)
        room = policy.batch - len(claimed)
        if bucket is None or room <= 0:
            continue
        allowed = min(_allowance(bucket, policy, now), room)
        if allowed > 0:
            due = await repo.claim_due(session, partner, now, allowed)
            bucket.tokens -= len(due)
            claimed.extend(due)
    return claimed


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    policy: Policy,
    now: datetime | None = None,
    resolver: egress.Resolver = egress.resolve,
) -> int:
    """One pass: POST every due delivery that its partner's rate limit allows (at once), then record each
    outcome. The rows and the partners' buckets stay locked for the pass (short: `timeout_s` at most), so
    replicas never send one twice at the same time nor overspend a partner's limit."""
    now = now or datetime.now(UTC)
    async with unit_of_work(sessionmaker) as session:
        due = await _claim(session, policy, now)
        outcomes = await asyncio.gather(*(_post(http, policy, d, s, now, resolver) for d, s in due))
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


async def set_partner_limit(session: AsyncSession, partner: str, per_minute: int | None) -> None:
    await repo.set_partner_limit(session, partner, per_minute, datetime.now(UTC))
    log.info("webhook partner limit set", extra={"partner": partner, "per_minute": per_minute})
