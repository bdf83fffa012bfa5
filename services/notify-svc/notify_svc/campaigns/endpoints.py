"""Staff write, preview, schedule and follow campaigns at /v1/admin/campaigns (permission
`campaigns:manage`)."""

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from kit.audit import CurrentAudit, audited, row_state
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep, SessionDep, after_commit
from notify_svc.campaigns import repository as repo
from notify_svc.campaigns import service
from notify_svc.campaigns.schemas import (
    CampaignIn,
    CampaignList,
    CampaignOut,
    CampaignStats,
    Channel,
    PreviewIn,
    PreviewOut,
    Reach,
    ScheduleIn,
    Segment,
)
from notify_svc.context import ContextDep
from notify_svc.models import Campaign

staff_router = APIRouter(prefix="/v1/admin/campaigns", tags=["campaigns (staff)"])

Manager = Annotated[Principal, Depends(require_permission("campaigns:manage"))]


async def _out(session: AsyncSession, campaign: Campaign) -> CampaignOut:
    push_delivered, opened, clicked = await repo.counts(session, campaign.id)
    return CampaignOut(
        campaign_id=str(campaign.id),
        title=campaign.title,
        text=campaign.body,
        segment=Segment.model_validate(campaign.segment),
        channels=[Channel(c) for c in campaign.channels],
        status=campaign.status,
        notice_id=str(campaign.notice_id) if campaign.notice_id else None,
        created_by=campaign.created_by,
        created_at=campaign.created_at,
        send_at=campaign.send_at,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
        stats=CampaignStats(
            batches=campaign.batches,
            recipients=campaign.recipients,
            inbox_delivered=campaign.inbox_sent,
            push_queued=campaign.push_queued,
            push_delivered=push_delivered,
            sms_sent=campaign.sms_sent,
            sms_deferred=campaign.sms_deferred,
            unreached=campaign.unreached,
            opened=opened,
            clicked=clicked,
        ),
    )


@staff_router.post("/preview")
async def preview(body: PreviewIn, _: Manager, session: ReadSessionDep) -> PreviewOut:
    """How many users the segment selects now, and how many of them each channel reaches."""
    audience, inbox, push, sms = await repo.preview(session, body.segment, datetime.now(UTC))
    return PreviewOut(audience=audience, reachable=Reach(inbox=inbox, push=push, sms=sms))


CAMPAIGN = row_state(Campaign)


@staff_router.post("", status_code=201, dependencies=[audited("campaign.create", "campaign", state=CAMPAIGN)])
async def create(body: CampaignIn, staff: Manager, session: SessionDep, audit: CurrentAudit) -> CampaignOut:
    """A draft; nothing is sent until it is scheduled."""
    campaign = await service.create(session, body, staff.subject)
    audit.note(target_id=campaign.id)
    return await _out(session, campaign)


@staff_router.get("")
async def recent(_: Manager, session: ReadSessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> CampaignList:
    return CampaignList(items=[await _out(session, c) for c in await repo.recent(session, limit)])


@staff_router.get("/{campaign_id}")
async def one(campaign_id: uuid.UUID, _: Manager, session: ReadSessionDep) -> CampaignOut:
    return await _out(session, await service.get(session, campaign_id))


@staff_router.post(
    "/{campaign_id}/schedule", dependencies=[audited("campaign.schedule", "campaign", "campaign_id", state=CAMPAIGN)]
)
async def schedule(
    campaign_id: uuid.UUID, body: ScheduleIn, _: Manager, session: SessionDep, context: ContextDep
) -> CampaignOut:
    """Send at `send_at` (absent or past: now); again on a scheduled one moves its time."""
    campaign = await service.schedule(session, campaign_id, body.send_at)
    send_at = campaign.send_at
    assert send_at is not None
    after_commit(session, lambda: context.campaigns.ring_at(send_at))
    return await _out(session, campaign)


@staff_router.post(
    "/{campaign_id}/cancel", dependencies=[audited("campaign.cancel", "campaign", "campaign_id", state=CAMPAIGN)]
)
async def cancel(campaign_id: uuid.UUID, _: Manager, session: SessionDep) -> CampaignOut:
    return await _out(session, await service.cancel(session, campaign_id))
