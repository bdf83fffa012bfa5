"""SQL of push tokens and push jobs. Never commits."""

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import Campaign, Preference, PushJob, PushToken


async def upsert_token(session: AsyncSession, user_id: uuid.UUID, platform: str, token: str, at: datetime) -> None:
    stmt = insert(PushToken).values(token=token, user_id=user_id, platform=platform, created_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[PushToken.token], set_={"user_id": user_id, "platform": platform, "created_at": at}
    )
    await session.execute(stmt)


async def tokens_of(session: AsyncSession, user_id: uuid.UUID) -> Sequence[PushToken]:
    stmt = select(PushToken).where(PushToken.user_id == user_id).order_by(PushToken.created_at)
    return (await session.scalars(stmt)).all()


async def tokens_of_users(session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[PushToken]]:
    """The push tokens of several users at once (the push worker's claimed jobs: one query, not one per job)."""
    found: dict[uuid.UUID, list[PushToken]] = {}
    wanted = set(user_ids)
    if not wanted:
        return found
    stmt = select(PushToken).where(PushToken.user_id.in_(wanted)).order_by(PushToken.created_at)
    for token in (await session.scalars(stmt)).all():
        found.setdefault(token.user_id, []).append(token)
    return found


async def count_tokens(session: AsyncSession, user_id: uuid.UUID) -> int:
    stmt = select(func.count()).select_from(PushToken).where(PushToken.user_id == user_id)
    return int((await session.execute(stmt)).scalar_one())


async def delete_token(session: AsyncSession, token: str, user_id: uuid.UUID | None = None) -> bool:
    stmt = delete(PushToken).where(PushToken.token == token)
    if user_id is not None:
        stmt = stmt.where(PushToken.user_id == user_id)
    return (await session.execute(stmt.returning(PushToken.token))).first() is not None


def add_job(session: AsyncSession, job: PushJob) -> None:
    session.add(job)


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> Sequence[PushJob]:
    stmt = (
        select(PushJob)
        .where(PushJob.done_at.is_(None), PushJob.next_attempt_at <= now)
        .order_by(PushJob.next_attempt_at, PushJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(stmt)).all()


async def next_due(session: AsyncSession) -> datetime | None:
    stmt = select(func.min(PushJob.next_attempt_at)).where(PushJob.done_at.is_(None))
    return (await session.execute(stmt)).scalar_one_or_none()


async def jobs_of(session: AsyncSession, user_id: uuid.UUID, limit: int) -> Sequence[PushJob]:
    stmt = select(PushJob).where(PushJob.user_id == user_id).order_by(PushJob.id.desc()).limit(limit)
    return (await session.scalars(stmt)).all()


async def marketing_withdrawn(session: AsyncSession, campaign_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """A marketing campaign's push to a user who no longer consents to marketing pushes (a notice's is
    a service message: never withdrawn)."""
    stmt = (
        select(Campaign.notice_id, Preference.marketing_push)
        .select_from(Campaign)
        .outerjoin(Preference, Preference.user_id == user_id)
        .where(Campaign.id == campaign_id)
    )
    row = (await session.execute(stmt)).first()
    return row is not None and row[0] is None and not row[1]
