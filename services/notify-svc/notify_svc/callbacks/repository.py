"""SQL of call-back requests. Never commits."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.callbacks.lifecycle import OPEN
from notify_svc.models import CallbackRequest


def add(session: AsyncSession, callback: CallbackRequest) -> None:
    session.add(callback)


async def get(session: AsyncSession, callback_id: uuid.UUID, *, lock: bool = False) -> CallbackRequest | None:
    stmt = select(CallbackRequest).where(CallbackRequest.id == callback_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_call(session: AsyncSession, provider_call_id: str) -> CallbackRequest | None:
    stmt = select(CallbackRequest).where(CallbackRequest.provider_call_id == provider_call_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def open_count(session: AsyncSession, user_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(
        CallbackRequest.user_id == user_id, CallbackRequest.status.in_([s.value for s in OPEN])
    )
    return int((await session.execute(stmt)).scalar_one())


async def of_user(session: AsyncSession, user_id: uuid.UUID, limit: int) -> Sequence[CallbackRequest]:
    stmt = (
        select(CallbackRequest)
        .where(CallbackRequest.user_id == user_id)
        .order_by(CallbackRequest.created_at.desc())
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def queue(session: AsyncSession, statuses: Sequence[str], limit: int) -> Sequence[CallbackRequest]:
    """Earliest wish first (no wish: as soon as possible, from the request's time)."""
    due = func.coalesce(CallbackRequest.preferred_at, CallbackRequest.created_at)
    stmt = (
        select(CallbackRequest)
        .where(CallbackRequest.status.in_(statuses))
        .order_by(due, CallbackRequest.id)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


def touch(callback: CallbackRequest, now: datetime) -> None:
    callback.updated_at = now
