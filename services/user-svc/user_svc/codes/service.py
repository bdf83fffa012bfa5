"""One-time codes: 6 digits, stored hashed, expire, allow few attempts, only the newest counts,
rate-limited per destination (resend interval and a window quota) and per client address."""

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import unit_of_work
from kit.errors import TooManyRequests
from user_svc.codes import repository
from user_svc.codes.provider import DeliveryFailed, MessageProvider
from user_svc.errors import CodeDeliveryFailed, CodeInvalid
from user_svc.models import VerificationCode
from user_svc.settings import Settings

log = logging.getLogger(__name__)

PURPOSE_TEXT = {
    "register": "to register",
    "login": "to log in",
    "bind_email": "to bind this e-mail address",
}


@dataclass(frozen=True)
class SentCode:
    expires_in: int
    resend_after: int


def _hash(code_id: UUID, code: str) -> str:
    return hashlib.sha256(code_id.bytes + code.encode()).hexdigest()


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds() + 0.999))


async def send_code(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    channel: str,
    destination: str,
    purpose: str,
    client_ip: str,
    settings: Settings,
    provider: MessageProvider,
) -> SentCode:
    await repository.lock_destination(session, destination)
    now = datetime.now(UTC)
    last = await repository.last_delivered_at(session, destination)
    resend_at = last + timedelta(seconds=settings.code_resend_interval_s) if last is not None else None
    if resend_at is not None and resend_at > now:
        raise TooManyRequests(
            "A code was sent to this destination moments ago; wait before asking again",
            retry_after_s=_seconds_until(resend_at, now),
        )
    window = timedelta(seconds=settings.code_window_s)
    count, oldest = await repository.window_usage(session, since=now - window, destination=destination)
    if count >= settings.code_max_per_destination and oldest is not None:
        raise TooManyRequests("Too many codes for this destination", retry_after_s=_seconds_until(oldest + window, now))
    count, oldest = await repository.window_usage(session, since=now - window, client_ip=client_ip)
    if count >= settings.code_max_per_client and oldest is not None:
        raise TooManyRequests("Too many codes from this address", retry_after_s=_seconds_until(oldest + window, now))

    code = f"{secrets.randbelow(1_000_000):06d}"
    row = VerificationCode(
        id=uuid4(),
        channel=channel,
        destination=destination,
        purpose=purpose,
        client_ip=client_ip,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.code_ttl_s),
    )
    row.code_hash = _hash(row.id, code)
    minutes = max(1, settings.code_ttl_s // 60)
    body = f"[PowerBank] Your code {PURPOSE_TEXT.get(purpose, '')} is {code}. It expires in {minutes} min."
    try:
        await provider.send(channel=channel, destination=destination, body=body, code=code)
    except DeliveryFailed:
        # The failed attempt still counts against the quotas (its own transaction: this one rolls back).
        row.delivered = False
        async with unit_of_work(sessionmaker) as own:
            own.add(row)
        raise CodeDeliveryFailed() from None
    row.delivered = True
    session.add(row)
    await session.flush()
    log.info("verification code sent", extra={"channel": channel, "purpose": purpose})
    return SentCode(expires_in=settings.code_ttl_s, resend_after=settings.code_resend_interval_s)


async def consume_code(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    destination: str,
    purpose: str,
    code: str,
    settings: Settings,
) -> None:
    """Use up the newest code for (destination, purpose) if `code` matches; else CodeInvalid."""
    now = datetime.now(UTC)
    row = await repository.latest_open(session, destination=destination, purpose=purpose)
    if (
        row is None
        or row.consumed_at is not None
        or row.expires_at <= now
        or row.attempts >= settings.code_max_attempts
    ):
        raise CodeInvalid()
    if not hmac.compare_digest(row.code_hash, _hash(row.id, code)):
        async with unit_of_work(sessionmaker) as own:
            await repository.count_attempt(own, row.id)
        raise CodeInvalid()
    if not await repository.consume(session, row.id, now=now, max_attempts=settings.code_max_attempts):
        raise CodeInvalid()  # used concurrently
