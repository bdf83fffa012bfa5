"""SQL of partner webhooks. Never commits."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.models import WebhookAttempt, WebhookDelivery, WebhookSubscription


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


async def claim_due(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[WebhookDelivery, WebhookSubscription]]:
    """Due pending deliveries, locked for this worker (other replicas skip them)."""
    stmt = (
        select(WebhookDelivery, WebhookSubscription)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    return [(d, s) for d, s in (await session.execute(stmt)).all()]


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
