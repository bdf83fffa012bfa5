from uuid import UUID

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import Admin, User


async def get_by_login(session: AsyncSession, login: str) -> Admin | None:
    return (await session.scalars(select(Admin).where(Admin.login == login))).one_or_none()


async def insert_if_login_free(
    session: AsyncSession,
    *,
    admin_id: UUID,
    login: str,
    password_hash: str,
    role: str,
    must_change_password: bool = False,
) -> bool:
    stmt = (
        insert(Admin)
        .values(
            id=admin_id,
            login=login,
            password_hash=password_hash,
            role=role,
            must_change_password=must_change_password,
        )
        .on_conflict_do_nothing(index_elements=[Admin.login])
        .returning(Admin.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def search_users(
    session: AsyncSession, *, query: str | None, status: str | None, limit: int, offset: int
) -> list[User]:
    stmt = select(User).order_by(User.registered_at.desc(), User.id).limit(limit).offset(offset)
    if query:
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(
                User.phone.ilike(like, escape="\\"),
                User.email.ilike(like, escape="\\"),
                User.username.ilike(like, escape="\\"),
                User.display_name.ilike(like, escape="\\"),
            )
        )
    if status is not None:
        stmt = stmt.where(User.status == status)
    return list(await session.scalars(stmt))
