"""All SQL of campaigns: segments as predicates over the audience projection, the keyset batch of
recipients, the set-based writes of one batch, and the counts. Never commits."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.campaigns.schemas import Segment
from notify_svc.models import (
    AudienceCoupon,
    AudienceMember,
    Campaign,
    CampaignInteraction,
    CampaignStatus,
    DeferredSms,
    Message,
    Preference,
    PushJob,
    PushToken,
)


def _division_prefix(code: str) -> str:
    """GB/T 2260: 440000 is the province 44, 440300 the city 4403, 440304 the district itself."""
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


def predicates(segment: Segment, now: datetime) -> list[ColumnElement[bool]]:
    a = AudienceMember
    where: list[ColumnElement[bool]] = [a.deregistered_at.is_(None)]
    if segment.regions:
        where.append(or_(*(a.division_code.startswith(_division_prefix(c), autoescape=True) for c in segment.regions)))
    if segment.credit_levels:
        where.append(a.credit_level.in_(segment.credit_levels))
    if segment.last_active_after is not None:
        where.append(a.last_active_at >= segment.last_active_after)
    if segment.last_active_before is not None:
        where.append(or_(a.last_active_at.is_(None), a.last_active_at < segment.last_active_before))
    if segment.registered_after is not None:
        where.append(a.registered_at >= segment.registered_after)
    if segment.registered_before is not None:
        where.append(a.registered_at < segment.registered_before)
    if segment.has_unused_coupon is not None:
        unused = exists().where(
            AudienceCoupon.user_id == a.user_id, AudienceCoupon.status == "available", AudienceCoupon.expires_at > now
        )
        where.append(unused if segment.has_unused_coupon else ~unused)
    return where


def _has_token() -> ColumnElement[bool]:
    return exists().where(PushToken.user_id == AudienceMember.user_id)


async def preview(session: AsyncSession, segment: Segment, now: datetime) -> tuple[int, int, int, int]:
    """(audience, consenting to inbox, to push with a phone, to SMS)."""
    p = Preference
    stmt = (
        select(
            func.count(),
            func.count().filter(p.marketing_inbox.is_(True)),
            func.count().filter(and_(p.marketing_push.is_(True), _has_token())),
            func.count().filter(p.marketing_sms.is_(True)),
        )
        .select_from(AudienceMember)
        .outerjoin(p, p.user_id == AudienceMember.user_id)
        .where(*predicates(segment, now))
    )
    row = (await session.execute(stmt)).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


@dataclass(frozen=True)
class Recipient:
    user_id: uuid.UUID
    inbox: bool
    push: bool
    sms: bool
    quiet_start: int | None
    quiet_end: int | None
    timezone: str
    has_token: bool


async def next_recipients(
    session: AsyncSession, segment: Segment, after: uuid.UUID | None, limit: int, now: datetime
) -> list[Recipient]:
    """The next keyset range of the segment: users after `after`, in user id order."""
    p = Preference
    stmt = (
        select(
            AudienceMember.user_id,
            func.coalesce(p.marketing_inbox, False),
            func.coalesce(p.marketing_push, False),
            func.coalesce(p.marketing_sms, False),
            p.quiet_start,
            p.quiet_end,
            func.coalesce(p.timezone, "Asia/Shanghai"),
            _has_token(),
        )
        .outerjoin(p, p.user_id == AudienceMember.user_id)
        .where(*predicates(segment, now))
        .order_by(AudienceMember.user_id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(AudienceMember.user_id > after)
    return [Recipient(*row) for row in (await session.execute(stmt)).all()]


_INSERT_MESSAGES = text(
    """
    INSERT INTO messages (id, user_id, category, title, body, created_at, campaign_id)
    SELECT gen_random_uuid(), u, 'marketing', :title, :body, :now, :campaign_id
    FROM unnest(CAST(:users AS uuid[])) AS u
    ON CONFLICT (campaign_id, user_id) DO NOTHING
    RETURNING user_id, id
    """
)


async def add_messages(
    session: AsyncSession, campaign: Campaign, users: Sequence[uuid.UUID], now: datetime
) -> dict[uuid.UUID, uuid.UUID]:
    """One statement for the batch's inbox rows; a (campaign, user) already messaged is skipped.
    The new message id per user."""
    if not users:
        return {}
    params = {"title": campaign.title, "body": campaign.body, "now": now, "campaign_id": campaign.id, "users": users}
    rows = await session.execute(_INSERT_MESSAGES, params)
    return {user_id: message_id for user_id, message_id in rows.all()}


async def add_push_jobs(session: AsyncSession, jobs: list[dict[str, Any]]) -> None:
    if jobs:
        await session.execute(insert(PushJob), jobs)


async def add_deferred_sms(session: AsyncSession, held: list[dict[str, Any]]) -> None:
    if held:
        await session.execute(insert(DeferredSms), held)


async def claim_due_sms(session: AsyncSession, now: datetime, limit: int) -> list[tuple[DeferredSms, bool]]:
    """Held SMS whose time has come, locked (`SKIP LOCKED`: another replica takes others), each with whether
    its user still consents to marketing SMS."""
    stmt = (
        select(DeferredSms, func.coalesce(Preference.marketing_sms, False))
        .outerjoin(Preference, Preference.user_id == DeferredSms.user_id)
        .where(DeferredSms.done_at.is_(None), DeferredSms.due_at <= now)
        .order_by(DeferredSms.due_at)
        .limit(limit)
        .with_for_update(of=DeferredSms, skip_locked=True)
    )
    return [(row[0], bool(row[1])) for row in (await session.execute(stmt)).all()]


async def next_sms_due(session: AsyncSession) -> datetime | None:
    stmt = select(func.min(DeferredSms.due_at)).where(DeferredSms.done_at.is_(None))
    due: datetime | None = (await session.execute(stmt)).scalar_one()
    return due


async def count_sent_sms(session: AsyncSession, sent: dict[uuid.UUID, int]) -> None:
    for campaign_id, n in sent.items():
        await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(sms_sent=Campaign.sms_sent + n))


async def claim_due(session: AsyncSession, now: datetime) -> Campaign | None:
    """The campaign to send a batch of now, locked (`SKIP LOCKED`: another process takes another one)."""
    stmt = (
        select(Campaign)
        .where(
            Campaign.status.in_([CampaignStatus.SCHEDULED.value, CampaignStatus.SENDING.value]),
            Campaign.send_at <= now,
        )
        .order_by(Campaign.send_at, Campaign.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def next_due(session: AsyncSession) -> datetime | None:
    stmt = select(func.min(Campaign.send_at)).where(
        Campaign.status.in_([CampaignStatus.SCHEDULED.value, CampaignStatus.SENDING.value])
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get(session: AsyncSession, campaign_id: uuid.UUID, *, lock: bool = False) -> Campaign | None:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def recent(session: AsyncSession, limit: int) -> Sequence[Campaign]:
    stmt = select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit)
    return (await session.scalars(stmt)).all()


async def counts(session: AsyncSession, campaign_id: uuid.UUID) -> tuple[int, int, int]:
    """(pushes delivered, recipients who opened, recipients who clicked)."""
    delivered = select(func.count()).where(PushJob.campaign_id == campaign_id, PushJob.outcome == "delivered")
    interactions = select(
        func.count().filter(CampaignInteraction.kind == "open"),
        func.count().filter(CampaignInteraction.kind == "click"),
    ).where(CampaignInteraction.campaign_id == campaign_id)
    pushed = int((await session.execute(delivered)).scalar_one())
    opened, clicked = (await session.execute(interactions)).one()
    return pushed, int(opened), int(clicked)


async def campaign_of_message(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID) -> uuid.UUID | None:
    stmt = select(Message.campaign_id).where(Message.id == message_id, Message.user_id == user_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def record_interaction(
    session: AsyncSession, campaign_id: uuid.UUID, user_id: uuid.UUID, kind: str, at: datetime
) -> None:
    stmt = insert(CampaignInteraction).values(campaign_id=campaign_id, user_id=user_id, kind=kind, at=at)
    await session.execute(stmt.on_conflict_do_nothing())
