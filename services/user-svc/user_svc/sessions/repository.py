from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, and_, case, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import LoginFailure, RefreshToken, RevokedAccessToken


async def lock_until(session: AsyncSession, key: str, now: datetime) -> datetime | None:
    stmt = select(LoginFailure.locked_until).where(LoginFailure.key == key, LoginFailure.locked_until > now)
    return (await session.execute(stmt)).scalar_one_or_none()


async def add_failure(session: AsyncSession, key: str, *, now: datetime, window_start: datetime) -> int:
    """Count one failure for `key` (a new window if the last began before `window_start`); the count."""
    fresh = LoginFailure.window_started_at < window_start
    stmt = (
        insert(LoginFailure)
        .values(key=key, failures=1, window_started_at=now, locked_until=None)
        .on_conflict_do_update(
            index_elements=[LoginFailure.key],
            set_={
                "failures": case((fresh, 1), else_=LoginFailure.failures + 1),
                "window_started_at": case((fresh, now), else_=LoginFailure.window_started_at),
            },
        )
        .returning(LoginFailure.failures)
    )
    return int((await session.execute(stmt)).scalar_one())


async def lock(session: AsyncSession, key: str, *, now: datetime, until: datetime) -> None:
    await session.execute(
        update(LoginFailure)
        .where(LoginFailure.key == key)
        .values(locked_until=until, failures=0, window_started_at=now)
    )


async def clear_failures(session: AsyncSession, key: str) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.key == key))


async def get_refresh(session: AsyncSession, token_hash: str, *, for_update: bool = False) -> RefreshToken | None:
    stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).one_or_none()


@dataclass(frozen=True)
class RevokedRow:
    user_id: UUID
    access_jti: str
    created_at: datetime


async def revoke_family(session: AsyncSession, family_id: UUID, now: datetime) -> list[RevokedRow]:
    return await _revoke(session, RefreshToken.family_id == family_id, now)


async def revoke_user(session: AsyncSession, user_id: UUID, now: datetime) -> list[RevokedRow]:
    return await _revoke(session, RefreshToken.user_id == user_id, now)


async def revoke_grant(session: AsyncSession, user_id: UUID, client_id: str, now: datetime) -> list[RevokedRow]:
    """Every token a client application holds for one user."""
    return await _revoke(session, and_(RefreshToken.user_id == user_id, RefreshToken.client_id == client_id), now)


async def revoke_client(session: AsyncSession, client_id: str, now: datetime) -> list[RevokedRow]:
    return await _revoke(session, RefreshToken.client_id == client_id, now)


async def _revoke(session: AsyncSession, where: ColumnElement[bool], now: datetime) -> list[RevokedRow]:
    stmt = (
        update(RefreshToken)
        .where(where, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(RefreshToken.user_id, RefreshToken.access_jti, RefreshToken.created_at)
    )
    return [RevokedRow(*row) for row in (await session.execute(stmt)).all()]


async def deny(session: AsyncSession, jtis: list[str], expires_at: datetime) -> None:
    if not jtis:
        return
    stmt = insert(RevokedAccessToken).values([{"jti": j, "expires_at": expires_at} for j in jtis])
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[RevokedAccessToken.jti]))


async def is_denied(session: AsyncSession, jti: str, now: datetime) -> bool:
    stmt = select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == jti, RevokedAccessToken.expires_at > now)
    return (await session.execute(stmt)).scalar_one_or_none() is not None
