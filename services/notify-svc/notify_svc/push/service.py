"""Push to the phone: users register device tokens; every inbox message writes a push job in its own
transaction; the push worker (kit periodic job, woken after each commit that wrote one) sends it to each
of the user's tokens, unregisters tokens the provider calls invalid, retries passing failures, and falls
back to SMS for a critical message no phone received (user-svc holds the phone number and the SMS
provider: it gets a `user.send_sms` command)."""

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import SendSms
from kit.app import Runtime
from kit.db import after_commit
from kit.errors import BusinessError, NotFound
from kit.periodic import Alarm
from notify_svc.models import PushJob, PushToken
from notify_svc.push import repository as repo
from notify_svc.push.provider import PushMessage, PushProvider, PushStatus, fit

log = logging.getLogger(__name__)

MAX_TOKENS_PER_USER = 10
MAX_ATTEMPTS = 4
RETRY_AFTER = (timedelta(seconds=2), timedelta(seconds=10), timedelta(seconds=60))


class TooManyDevices(BusinessError):
    status = 409
    code = "too_many_devices"
    title = "Too many devices registered for push; remove one first"


class PushTokenNotFound(NotFound):
    code = "push_token_not_found"
    title = "Push token not found"


async def register(session: AsyncSession, user_id: uuid.UUID, platform: str, token: str) -> None:
    mine = {t.token for t in await repo.tokens_of(session, user_id)}
    if token not in mine and len(mine) >= MAX_TOKENS_PER_USER:
        raise TooManyDevices(f"At most {MAX_TOKENS_PER_USER} devices", max_devices=MAX_TOKENS_PER_USER)
    await repo.upsert_token(session, user_id, platform, token, datetime.now(UTC))


async def unregister(session: AsyncSession, user_id: uuid.UUID, token: str) -> None:
    if not await repo.delete_token(session, token, user_id):
        raise PushTokenNotFound("You have no such push token")


def enqueue(
    session: AsyncSession,
    alarm: Alarm | None,
    *,
    user_id: uuid.UUID,
    message_id: uuid.UUID | None,
    title: str,
    body: str,
    critical: bool,
) -> None:
    now = datetime.now(UTC)
    repo.add_job(
        session,
        PushJob(
            user_id=user_id,
            message_id=message_id,
            title=title,
            body=body,
            critical=critical,
            created_at=now,
            attempts=0,
            next_attempt_at=now,
        ),
    )
    if alarm is not None:
        after_commit(session, lambda: alarm.ring_at(now))


async def send_due(
    session: AsyncSession, runtime: Runtime, provider: PushProvider, *, limit: int = 100
) -> datetime | None:
    """Send the due jobs (claimed `SKIP LOCKED`: replicas share the work); the next due time."""
    now = datetime.now(UTC)
    jobs = await repo.claim_due(session, now, limit)
    tokens = await repo.tokens_of_users(session, (job.user_id for job in jobs))
    for job in jobs:
        await _send(session, runtime, provider, job, tokens.setdefault(job.user_id, []), now)
    await session.flush()
    return await repo.next_due(session)


async def _send(
    session: AsyncSession,
    runtime: Runtime,
    provider: PushProvider,
    job: PushJob,
    tokens: list[PushToken],
    now: datetime,
) -> None:
    """`tokens`: the user's, shared by this round's jobs of the same user (an invalid one is dropped from it)."""
    job.attempts += 1
    if job.campaign_id is not None and await repo.marketing_withdrawn(session, job.campaign_id, job.user_id):
        _finish(job, now, "no_consent")  # consent withdrawn while the push waited (quiet hours, a retry)
        return
    data = {"message_id": str(job.message_id)} if job.message_id else {}
    body = fit(job.title, job.body, data)
    results: dict[str, str] = {}
    if tokens:
        messages = [PushMessage(t.token, t.platform, job.title, body, data) for t in tokens]
        try:
            answers: Sequence[tuple[str, PushStatus]] = [(r.token, r.status) for r in await provider.send(messages)]
        except Exception as exc:  # the provider is unreachable: every token is a passing failure
            log.warning("push provider unreachable", extra={"error": repr(exc)})
            answers = [(t.token, PushStatus.UNAVAILABLE) for t in tokens]
        for token, status in answers:
            results[token[-8:]] = status.value
            if status is PushStatus.INVALID_TOKEN:
                await repo.delete_token(session, token)
                tokens[:] = [t for t in tokens if t.token != token]
                log.info("push token invalid: unregistered", extra={"user_id": str(job.user_id)})
        delivered = any(status is PushStatus.OK for _, status in answers)
        retry = not delivered and any(status is PushStatus.UNAVAILABLE for _, status in answers)
    else:
        delivered, retry = False, False
    job.results = results
    if delivered:
        _finish(job, now, "delivered")
    elif retry and job.attempts < MAX_ATTEMPTS:
        job.next_attempt_at = now + RETRY_AFTER[min(job.attempts, len(RETRY_AFTER)) - 1]
    elif job.critical:
        await runtime.publish(
            session,
            SendSms(user_id=job.user_id, text=f"{job.title}: {job.body}"[:500], reason="push_undelivered"),
            key=str(job.user_id),
        )
        _finish(job, now, "sms_fallback")
    else:
        _finish(job, now, "no_device" if not tokens else "failed")


def _finish(job: PushJob, now: datetime, outcome: str) -> None:
    job.done_at = now
    job.outcome = outcome
