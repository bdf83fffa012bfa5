"""User sessions: a short-lived access token plus an opaque refresh token that rotates on every use.
Presenting a refresh token that was already rotated means it leaked: the whole family is revoked,
and the access tokens it issued go on the denylist. Logout revokes the family and the caller's
access token id. A family may belong to a client application acting for the user (OAuth 2.0): its
rows carry the client id and granted scopes, and rotate the same way.

Every revocation also publishes `user.session.revoked` with the access-token ids that may still be
alive, so every service refuses them within about a second (kit.revocation); user-svc itself checks
its denylist table too.

Failed logins are counted per login identifier (also for identifiers that name nobody, so the
lockout tells nothing about who exists) in their own transaction, since the request's rolls back."""

import hashlib
import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import SessionRevoked
from kit.db import unit_of_work
from user_svc.errors import InvalidRefreshToken, LoginLocked, TokenInvalidScope
from user_svc.events import EventPublisher
from user_svc.models import RefreshToken, UserStatus
from user_svc.security import Tokens
from user_svc.sessions import repository
from user_svc.sessions.repository import RevokedRow
from user_svc.settings import Settings
from user_svc.users import repository as users

log = logging.getLogger(__name__)

_EVENT_TOKEN_IDS = 1000  # token ids per revocation event


@dataclass(frozen=True)
class IssuedSession:
    user_id: UUID
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    family_id: UUID
    scopes: tuple[str, ...] = ()  # granted to a client application


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(
    session: AsyncSession,
    *,
    user_id: UUID,
    tokens: Tokens,
    settings: Settings,
    family_id: UUID | None = None,
    client_id: str | None = None,
    scopes: Sequence[str] = (),
) -> IssuedSession:
    """A new session of the user's own, or of `client_id` acting for the user with `scopes`."""
    now = datetime.now(UTC)
    if client_id is None:
        access = tokens.for_user(str(user_id))
    else:
        access = tokens.for_delegated(str(user_id), client_id, list(scopes))
    refresh = secrets.token_urlsafe(32)
    family_id = family_id or uuid4()
    session.add(
        RefreshToken(
            id=uuid4(),
            family_id=family_id,
            user_id=user_id,
            token_hash=_hash(refresh),
            access_jti=access.token_id,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_s),
            client_id=client_id,
            scopes=list(scopes) if client_id is not None else None,
        )
    )
    await session.flush()
    return IssuedSession(
        user_id,
        access.access_token,
        access.expires_in,
        refresh,
        settings.refresh_token_ttl_s,
        family_id,
        tuple(scopes) if client_id is not None else (),
    )


async def rotate(
    session: AsyncSession,
    *,
    refresh_token: str,
    tokens: Tokens,
    settings: Settings,
    events: EventPublisher,
    client_id: str | None = None,
    narrow_scopes: Sequence[str] | None = None,
) -> IssuedSession | None:
    """The next session of the refresh token's family, or None when the token was already used:
    then the whole family has been revoked in `session`, which the caller must commit (and answer
    `refresh_token_reused`). The row lock serialises concurrent uses of one token. A user's own
    refresh token works only without `client_id`, an application's only with its own."""
    now = datetime.now(UTC)
    row = await repository.get_refresh(session, _hash(refresh_token), for_update=True)
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.client_id != client_id:
        raise InvalidRefreshToken()
    if row.used_at is not None:
        revoked = await repository.revoke_family(session, row.family_id, now)
        await _revoked(session, revoked, events=events, settings=settings, reason="refresh_token_reused")
        log.warning("refresh token reused; family revoked", extra={"user_id": str(row.user_id)})
        return None
    scopes = list(row.scopes or [])
    if narrow_scopes is not None:
        if not set(narrow_scopes) <= set(scopes):
            raise TokenInvalidScope()
        scopes = [s for s in scopes if s in narrow_scopes]
    row.used_at = now
    user = await users.get_by_id(session, row.user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        raise InvalidRefreshToken()
    return await start(
        session,
        user_id=row.user_id,
        tokens=tokens,
        settings=settings,
        family_id=row.family_id,
        client_id=client_id,
        scopes=scopes,
    )


async def logout(
    session: AsyncSession,
    *,
    user_id: UUID,
    access_jti: str,
    refresh_token: str | None,
    settings: Settings,
    events: EventPublisher,
) -> None:
    now = datetime.now(UTC)
    revoked: list[RevokedRow] = []
    if refresh_token is not None:
        row = await repository.get_refresh(session, _hash(refresh_token))
        if row is not None and row.user_id == user_id and row.client_id is None:
            revoked = await repository.revoke_family(session, row.family_id, now)
    revoked.append(RevokedRow(user_id, access_jti, now))
    await _revoked(session, revoked, events=events, settings=settings, reason="logout")


async def end_all(
    session: AsyncSession, user_id: UUID, settings: Settings, events: EventPublisher, reason: str
) -> None:
    """Revoke every refresh token of a user, the applications' too (password change, block, deregistration)."""
    revoked = await repository.revoke_user(session, user_id, datetime.now(UTC))
    await _revoked(session, revoked, events=events, settings=settings, reason=reason)


async def end_family(
    session: AsyncSession, family_id: UUID, settings: Settings, events: EventPublisher, reason: str
) -> None:
    revoked = await repository.revoke_family(session, family_id, datetime.now(UTC))
    await _revoked(session, revoked, events=events, settings=settings, reason=reason)


async def end_grant(
    session: AsyncSession, user_id: UUID, client_id: str, settings: Settings, events: EventPublisher
) -> None:
    """End every session a client application holds for the user (consent withdrawn)."""
    revoked = await repository.revoke_grant(session, user_id, client_id, datetime.now(UTC))
    await _revoked(session, revoked, events=events, settings=settings, reason="consent_revoked")


async def end_client(session: AsyncSession, client_id: str, settings: Settings, events: EventPublisher) -> None:
    """End every session of a client application, for all its users (the application was disabled)."""
    revoked = await repository.revoke_client(session, client_id, datetime.now(UTC))
    await _revoked(session, revoked, events=events, settings=settings, reason="client_disabled")


async def revoke_access_tokens(
    session: AsyncSession, revoked: list[RevokedRow], *, events: EventPublisher, settings: Settings, reason: str
) -> None:
    """Deny these access tokens here and in every service (an administrator's sessions, for one)."""
    await _revoked(session, revoked, events=events, settings=settings, reason=reason)


async def _revoked(
    session: AsyncSession, revoked: list[RevokedRow], *, events: EventPublisher, settings: Settings, reason: str
) -> None:
    """Deny the revoked sessions' access tokens here and announce those that may still be alive."""
    if not revoked:
        return
    now = datetime.now(UTC)
    expiry = _access_expiry(now, settings)
    await repository.deny(session, [r.access_jti for r in revoked], expiry)
    alive_since = now - timedelta(seconds=_longest_access_ttl_s(settings) + 60)
    by_user: dict[UUID, list[str]] = defaultdict(list)
    for row in revoked:
        if row.created_at >= alive_since:
            by_user[row.user_id].append(row.access_jti)
    for user_id, token_ids in by_user.items():
        for i in range(0, len(token_ids), _EVENT_TOKEN_IDS):
            await events.publish(
                session,
                SessionRevoked(
                    user_id=user_id,
                    token_ids=token_ids[i : i + _EVENT_TOKEN_IDS],
                    expires_at=expiry,
                    reason=reason,
                    at=now,
                ),
                key=str(user_id),
            )


async def is_revoked(session: AsyncSession, jti: str) -> bool:
    return await repository.is_denied(session, jti, datetime.now(UTC))


def _longest_access_ttl_s(settings: Settings) -> int:
    return max(settings.access_token_ttl_s, settings.admin_access_token_ttl_s)


def _access_expiry(now: datetime, settings: Settings) -> datetime:
    # An access token lives at most this long, so the denylist entry can go after.
    return now + timedelta(seconds=_longest_access_ttl_s(settings) + 60)


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
