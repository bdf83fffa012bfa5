"""User sessions: a short-lived access token plus an opaque refresh token that rotates on every use.
Presenting a refresh token that was already rotated means it leaked: the whole family is revoked,
and the access tokens it issued go on the denylist. Logout revokes the family and the caller's
access token id. Other services verify access tokens offline, so a revoked access token stays usable
there until it expires (`ACCESS_TOKEN_TTL_S`, 5 minutes by default); user-svc checks the denylist.

Failed logins are counted per login identifier (also for identifiers that name nobody, so the
lockout tells nothing about who exists) in their own transaction, since the request's rolls back."""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import unit_of_work
from user_svc.errors import InvalidRefreshToken, LoginLocked
from user_svc.models import RefreshToken, UserStatus
from user_svc.security import Tokens
from user_svc.sessions import repository
from user_svc.settings import Settings
from user_svc.users import repository as users

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedSession:
    user_id: UUID
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(
    session: AsyncSession, *, user_id: UUID, tokens: Tokens, settings: Settings, family_id: UUID | None = None
) -> IssuedSession:
    now = datetime.now(UTC)
    access = tokens.for_user(str(user_id))
    refresh = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            id=uuid4(),
            family_id=family_id or uuid4(),
            user_id=user_id,
            token_hash=_hash(refresh),
            access_jti=access.token_id,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_s),
        )
    )
    await session.flush()
    return IssuedSession(user_id, access.access_token, access.expires_in, refresh, settings.refresh_token_ttl_s)


async def rotate(
    session: AsyncSession, *, refresh_token: str, tokens: Tokens, settings: Settings
) -> IssuedSession | None:
    """The next session of the refresh token's family, or None when the token was already used:
    then the whole family has been revoked in `session`, which the caller must commit (and answer
    `refresh_token_reused`). The row lock serialises concurrent uses of one token."""
    now = datetime.now(UTC)
    row = await repository.get_refresh(session, _hash(refresh_token), for_update=True)
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise InvalidRefreshToken()
    if row.used_at is not None:
        await repository.revoke_family(session, row.family_id, now=now, access_expiry=_access_expiry(now, settings))
        log.warning("refresh token reused; family revoked", extra={"user_id": str(row.user_id)})
        return None
    row.used_at = now
    user = await users.get_by_id(session, row.user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        raise InvalidRefreshToken()
    return await start(session, user_id=row.user_id, tokens=tokens, settings=settings, family_id=row.family_id)


async def logout(
    session: AsyncSession, *, user_id: UUID, access_jti: str, refresh_token: str | None, settings: Settings
) -> None:
    now = datetime.now(UTC)
    expiry = _access_expiry(now, settings)
    if refresh_token is not None:
        row = await repository.get_refresh(session, _hash(refresh_token))
        if row is not None and row.user_id == user_id:
            await repository.revoke_family(session, row.family_id, now=now, access_expiry=expiry)
    await repository.deny(session, [access_jti], expiry)


async def end_all(session: AsyncSession, user_id: UUID, settings: Settings) -> None:
    """Revoke every refresh token of a user (password change, block, deregistration)."""
    now = datetime.now(UTC)
    await repository.revoke_user(session, user_id, now=now, access_expiry=_access_expiry(now, settings))


async def is_revoked(session: AsyncSession, jti: str) -> bool:
    return await repository.is_denied(session, jti, datetime.now(UTC))


def _access_expiry(now: datetime, settings: Settings) -> datetime:
    # An access token lives at most this long, so the denylist entry can go after.
    return now + timedelta(seconds=max(settings.access_token_ttl_s, settings.admin_access_token_ttl_s) + 60)


class Lockout:
    """Counts failed logins per identifier; `check` raises LoginLocked (429 + Retry-After)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, max_failures: int | None = None
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._max_failures = max_failures or settings.login_max_failures

    async def check(self, session: AsyncSession, key: str) -> None:
        now = datetime.now(UTC)
        until = await repository.lock_until(session, key, now)
        if until is not None:
            raise LoginLocked(retry_after_s=int((until - now).total_seconds() + 0.999))

    async def failed(self, key: str) -> None:
        s = self._settings
        now = datetime.now(UTC)
        async with unit_of_work(self._sessionmaker) as own:
            count = await repository.add_failure(
                own, key, now=now, window_start=now - timedelta(seconds=s.login_failure_window_s)
            )
            if count >= self._max_failures:
                await repository.lock(own, key, now=now, until=now + timedelta(seconds=s.login_lockout_s))
                log.warning("login locked after repeated failures", extra={"failures": count})

    async def succeeded(self, session: AsyncSession, key: str) -> None:
        await repository.clear_failures(session, key)
