"""SQL of partner webhooks. Never commits."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.models import WebhookAttempt, WebhookDelivery, WebhookPartnerLimit, WebhookSubscription


async def subscribers(session: AsyncSession, event_type: str) -> Sequence[WebhookSubscription]:
    stmt = select(WebhookSubscription).where(
        WebhookSubscription.active.is_(True), WebhookSubscription.event_types.contains([event_type])
    )
    return (await session.execute(stmt)).scalars().all()


async def enqueue(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One delivery per (subscription, event): a redelivered event adds nothing."""
    if rows:
        await session.execute(
            insert(WebhookDelivery)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_webhook_deliveries_subscription_event")
        )


async def due_partners(session: AsyncSession, now: datetime) -> list[str]:
    """Partners with due deliveries, the longest waiting first."""
    stmt = (
        select(WebhookSubscription.partner)
        .join(WebhookDelivery, WebhookDelivery.subscription_id == WebhookSubscription.id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .group_by(WebhookSubscription.partner)
        .order_by(func.min(WebhookDelivery.next_attempt_at))
    )
    return list((await session.execute(stmt)).scalars().all())


async def lock_limits(session: AsyncSession, partners: list[str], now: datetime) -> list[WebhookPartnerLimit]:
    """The partners' buckets (created full: tokens are capped at refill), locked for this pass; a partner
    another replica is sending to right now is skipped."""
    if not partners:
        return []
    await session.execute(
        insert(WebhookPartnerLimit)
        .values([{"partner": p, "tokens": float("inf"), "refilled_at": now} for p in partners])
        .on_conflict_do_nothing(index_elements=["partner"])
    )
    stmt = (
        select(WebhookPartnerLimit)
        .where(WebhookPartnerLimit.partner.in_(partners))
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars().all())


async def claim_due(
    session: AsyncSession, partner: str, now: datetime, limit: int
) -> list[tuple[WebhookDelivery, WebhookSubscription]]:
    """A partner's due pending deliveries, oldest first, locked for this worker (other replicas skip them)."""
    stmt = (
        select(WebhookDelivery, WebhookSubscription)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(
            WebhookSubscription.partner == partner,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    return [(d, s) for d, s in (await session.execute(stmt)).all()]


async def set_partner_limit(session: AsyncSession, partner: str, per_minute: int | None, now: datetime) -> None:
    await session.execute(
        insert(WebhookPartnerLimit)
        .values(partner=partner, per_minute=per_minute, tokens=float("inf"), refilled_at=now)
        .on_conflict_do_update(index_elements=["partner"], set_={"per_minute": per_minute})
    )


async def partner_limits(session: AsyncSession) -> Sequence[WebhookPartnerLimit]:
    stmt = select(WebhookPartnerLimit).order_by(WebhookPartnerLimit.partner)
    return (await session.execute(stmt)).scalars().all()


def log_attempt(
    session: AsyncSession, delivery_id: uuid.UUID, at: datetime, status_code: int | None, error: str | None, ms: int
) -> None:
    session.add(WebhookAttempt(delivery_id=delivery_id, at=at, status_code=status_code, error=error, duration_ms=ms))


async def subscriptions(session: AsyncSession) -> Sequence[WebhookSubscription]:
    stmt = select(WebhookSubscription).order_by(WebhookSubscription.created_at, WebhookSubscription.id)
    return (await session.execute(stmt)).scalars().all()


async def deactivate(session: AsyncSession, subscription_id: uuid.UUID) -> bool:
    stmt = (
        update(WebhookSubscription)
        .where(WebhookSubscription.id == subscription_id)
        .values(active=False)
        .returning(WebhookSubscription.id)
    )
    return (await session.execute(stmt, execution_options={"synchronize_session": False})).first() is not None


async def deliveries(
    session: AsyncSession, *, subscription_id: uuid.UUID | None, status: str | None, limit: int
) -> Sequence[WebhookDelivery]:
    stmt = select(WebhookDelivery)
    if subscription_id is not None:
        stmt = stmt.where(WebhookDelivery.subscription_id == subscription_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    stmt = stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def attempts(session: AsyncSession, delivery_id: uuid.UUID) -> Sequence[WebhookAttempt]:
    stmt = select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)
    return (await session.execute(stmt)).scalars().all()


async def deliveries_by_id(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    return await session.get(WebhookDelivery, delivery_id)
