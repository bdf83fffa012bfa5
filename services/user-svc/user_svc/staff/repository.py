from datetime import datetime
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import Admin, AdminRole, AdminSession, UserStatus


async def get(session: AsyncSession, admin_id: UUID, *, for_update: bool = False) -> Admin | None:
    return await session.get(Admin, admin_id, with_for_update=for_update)


async def search(
    session: AsyncSession, *, status: str | None, role: str | None, limit: int, offset: int
) -> list[Admin]:
    stmt = select(Admin).order_by(Admin.created_at, Admin.id).limit(limit).offset(offset)
    if status is not None:
        stmt = stmt.where(Admin.status == status)
    if role is not None:
        stmt = stmt.where(Admin.role == role)
    return list(await session.scalars(stmt))


async def active_by_login(session: AsyncSession, *, roles: list[str], limit: int) -> list[Admin]:
    stmt = select(Admin).where(Admin.status == UserStatus.ACTIVE).order_by(Admin.login).limit(limit)
    if roles:
        stmt = stmt.where(Admin.role.in_(roles))
    return list(await session.scalars(stmt))


async def count_active_super_admins(session: AsyncSession) -> int:
    stmt = (
        select(func.count())
        .select_from(Admin)
        .where(Admin.role == AdminRole.SUPER_ADMIN, Admin.status == UserStatus.ACTIVE)
    )
    return int((await session.execute(stmt)).scalar_one())


async def lock_super_admins(session: AsyncSession) -> None:
    """Serialises changes that could leave no active super administrator (two of them demoting each other)."""
    await session.execute(select(Admin.id).where(Admin.role == AdminRole.SUPER_ADMIN).with_for_update())


def add_session(session: AsyncSession, row: AdminSession) -> None:
    session.add(row)


async def sessions_of(session: AsyncSession, admin_id: UUID, *, now: datetime, limit: int) -> list[AdminSession]:
    stmt = (
        select(AdminSession)
        .where(AdminSession.admin_id == admin_id, AdminSession.expires_at > now)
        .order_by(AdminSession.created_at.desc())
        .limit(limit)
    )
    return list(await session.scalars(stmt))


async def session_by_refresh(session: AsyncSession, refresh_hash: str) -> AdminSession | None:
    found = select(AdminSession).where(AdminSession.refresh_hash == refresh_hash).with_for_update()
    return (await session.scalars(found)).one_or_none()


async def session_by_previous_refresh(session: AsyncSession, refresh_hash: str) -> AdminSession | None:
    found = select(AdminSession).where(AdminSession.previous_refresh_hash == refresh_hash).with_for_update()
    return (await session.scalars(found.limit(1))).one_or_none()


async def session_by_token(session: AsyncSession, token_id: str) -> AdminSession | None:
    return (await session.scalars(select(AdminSession).where(AdminSession.token_id == token_id))).one_or_none()


async def revoke_sessions(
    session: AsyncSession, admin_id: UUID, *, now: datetime, reason: str, session_id: UUID | None = None
) -> list[AdminSession]:
    """Mark the admin's live sessions (or one of them) revoked; the revoked rows."""
    stmt = (
        update(AdminSession)
        .where(
            AdminSession.admin_id == admin_id,
            AdminSession.revoked_at.is_(None),
            AdminSession.expires_at > now,
        )
        .values(revoked_at=now, revoked_reason=reason)
        .returning(AdminSession)
    )
    if session_id is not None:
        stmt = stmt.where(AdminSession.id == session_id)
    return list(await session.scalars(stmt))
