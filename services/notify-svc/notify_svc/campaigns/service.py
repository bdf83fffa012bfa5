"""Campaigns: staff pick a segment of the audience, preview its size, schedule a message; the fan-out
sends it in batches. A batch is one keyset range of the audience (user ids after the cursor) written in
ONE transaction: the inbox rows (unique per campaign and user), the push jobs, the SMS commands (outbox)
and the cursor past the range. A crash loses at most the batch in flight, which was never committed, and
the next process starts after the cursor: no recipient twice, none missed. Marketing goes only where the
user consented, per channel; a push waits for the end of the user's quiet hours."""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import SendSms
from kit.errors import Conflict, NotFound
from kit.outbox import OutboxWakeup, add_events
from notify_svc.campaigns import lifecycle
from notify_svc.campaigns import repository as repo
from notify_svc.campaigns.schemas import CampaignIn, Channel, Segment
from notify_svc.models import Campaign, CampaignStatus
from notify_svc.preferences.quiet import release_at

log = logging.getLogger(__name__)

PRODUCER = "notify-svc"


class CampaignNotFound(NotFound):
    code = "campaign_not_found"
    title = "Campaign not found"


class NotACampaignMessage(Conflict):
    code = "not_a_campaign_message"
    title = "Only a campaign's message can be clicked"


async def get(session: AsyncSession, campaign_id: uuid.UUID, *, lock: bool = False) -> Campaign:
    campaign = await repo.get(session, campaign_id, lock=lock)
    if campaign is None:
        raise CampaignNotFound(f"No campaign {campaign_id}")
    return campaign


async def create(session: AsyncSession, body: CampaignIn, by: str) -> Campaign:
    campaign = Campaign(
        id=uuid.uuid4(),
        title=body.title,
        body=body.text,
        segment=body.segment.model_dump(mode="json"),
        channels=sorted({c.value for c in body.channels}),
        status=CampaignStatus.DRAFT.value,
        created_by=by,
        created_at=datetime.now(UTC),
        batches=0,
        recipients=0,
        inbox_sent=0,
        push_queued=0,
        sms_sent=0,
        sms_deferred=0,
        unreached=0,
    )
    session.add(campaign)
    await session.flush()
    return campaign


async def schedule(session: AsyncSession, campaign_id: uuid.UUID, send_at: datetime | None) -> Campaign:
    campaign = await get(session, campaign_id, lock=True)
    lifecycle.apply(campaign, "schedule")
    now = datetime.now(UTC)
    campaign.send_at = max(send_at, now) if send_at is not None else now
    return campaign


async def cancel(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign:
    campaign = await get(session, campaign_id, lock=True)
    lifecycle.apply(campaign, "cancel")
    campaign.finished_at = datetime.now(UTC)
    return campaign


async def push_notice(session: AsyncSession, notice_id: uuid.UUID, title: str, body: str, by: str) -> None:
    """A published notice is in every inbox already (one row); its push to every phone is a campaign of
    the push channel alone over all users, sent by the same batches. A notice is a service message:
    no marketing consent, no quiet hours."""
    now = datetime.now(UTC)
    session.add(
        Campaign(
            id=uuid.uuid4(),
            title=title,
            body=body,
            segment={"all_users": True},
            channels=[Channel.PUSH.value],
            status=CampaignStatus.SCHEDULED.value,
            notice_id=notice_id,
            created_by=by,
            created_at=now,
            send_at=now,
            batches=0,
            recipients=0,
            inbox_sent=0,
            push_queued=0,
            sms_sent=0,
            sms_deferred=0,
            unreached=0,
        )
    )
    await session.flush()


@dataclass(frozen=True)
class Batch:
    campaign_id: uuid.UUID
    recipients: int
    finished: bool


async def send_next_batch(
    session: AsyncSession, *, batch_size: int, wakeup: OutboxWakeup | None = None
) -> Batch | None:
    """Write one batch of the earliest due campaign (None: nothing due). The caller commits: the batch's
    rows and the cursor past it go together or not at all."""
    now = datetime.now(UTC)
    campaign = await repo.claim_due(session, now)
    if campaign is None:
        return None
    if campaign.status == CampaignStatus.SCHEDULED.value:
        lifecycle.apply(campaign, "start")
        campaign.started_at = now
    segment = Segment.model_validate(campaign.segment)
    recipients = await repo.next_recipients(session, segment, campaign.cursor, batch_size, now)
    service_message = campaign.notice_id is not None
    channels = set(campaign.channels)

    inbox_users = [r.user_id for r in recipients if Channel.INBOX in channels and r.inbox]
    messages = await repo.add_messages(session, campaign, inbox_users, now)
    jobs: list[dict[str, Any]] = []
    texts: list[tuple[Any, str, str | None]] = []
    held: list[dict[str, Any]] = []
    reached = 0
    for r in recipients:
        push = Channel.PUSH in channels and r.has_token and (service_message or r.push)
        due = now if service_message else release_at(now, r.quiet_start, r.quiet_end, r.timezone)
        if push:
            jobs.append(
                {
                    "user_id": r.user_id,
                    "message_id": messages.get(r.user_id),
                    "title": campaign.title,
                    "body": campaign.body,
                    "critical": False,
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": due,
                    "campaign_id": campaign.id,
                }
            )
        # An SMS cannot wait on the phone as a push does: in the user's quiet hours it is held here until
        # they end (the SMS sender sends it then, if the user still consents).
        sms = Channel.SMS in channels and not service_message and r.sms
        if sms:
            text = f"{campaign.title}: {campaign.body}"[:500]
            if due == now:
                texts.append((SendSms(user_id=r.user_id, text=text, reason="marketing"), str(r.user_id), None))
            else:
                held.append(
                    {"campaign_id": campaign.id, "user_id": r.user_id, "text": text, "created_at": now, "due_at": due}
                )
        reached += int(r.user_id in messages or push or sms)
    await repo.add_push_jobs(session, jobs)
    await repo.add_deferred_sms(session, held)
    await add_events(session, texts, producer=PRODUCER, wakeup=wakeup)

    campaign.batches += 1
    campaign.recipients += reached
    campaign.inbox_sent += len(messages)
    campaign.push_queued += len(jobs)
    campaign.sms_sent += len(texts)
    campaign.sms_deferred += len(held)
    campaign.unreached += len(recipients) - reached
    if recipients:
        campaign.cursor = recipients[-1].user_id
    finished = len(recipients) < batch_size
    if finished:
        lifecycle.apply(campaign, "finish")
        campaign.finished_at = now
        log.info("campaign sent", extra={"campaign_id": str(campaign.id), "recipients": campaign.recipients})
    await session.flush()
    return Batch(campaign.id, len(recipients), finished)


async def next_due(session: AsyncSession) -> datetime | None:
    return await repo.next_due(session)


async def send_held_sms(
    session: AsyncSession, *, limit: int = 500, wakeup: OutboxWakeup | None = None
) -> datetime | None:
    """Send the marketing SMS held for quiet hours that have ended, to users who still consent; drop the
    others (`no_consent`). The caller commits: the rows and their `user.send_sms` commands go together.
    Returns when the next held one is due."""
    now = datetime.now(UTC)
    texts: list[tuple[Any, str, str | None]] = []
    sent: dict[uuid.UUID, int] = {}
    for job, consents in await repo.claim_due_sms(session, now, limit):
        job.done_at = now
        if not consents:
            job.outcome = "no_consent"  # withdrawn while it waited
            continue
        job.outcome = "sent"
        texts.append((SendSms(user_id=job.user_id, text=job.text, reason="marketing"), str(job.user_id), None))
        sent[job.campaign_id] = sent.get(job.campaign_id, 0) + 1
    await add_events(session, texts, producer=PRODUCER, wakeup=wakeup)
    await repo.count_sent_sms(session, sent)
    await session.flush()
    return await repo.next_sms_due(session)


async def record(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID, kind: str) -> bool:
    """An open (the message read) or a click of a campaign's message, once per recipient; False when
    the message is not a campaign's."""
    campaign_id = await repo.campaign_of_message(session, user_id, message_id)
    if campaign_id is None:
        return False
    now = datetime.now(UTC)
    if kind == "click":  # a click opens it too
        await repo.record_interaction(session, campaign_id, user_id, "open", now)
    await repo.record_interaction(session, campaign_id, user_id, kind, now)
    return True
