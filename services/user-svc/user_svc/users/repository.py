from datetime import date, datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import User


async def insert_if_phone_free(
    session: AsyncSession,
    *,
    user_id: UUID,
    phone: str,
    display_name: str | None,
    password_hash: str,
    terms_version: str,
    registered_at: datetime,
    birth_date: date | None = None,
) -> User | None:
    """The new user, or None when the phone is taken (also under concurrent registrations)."""
    stmt = (
        insert(User)
        .values(
            id=user_id,
            phone=phone,
            display_name=display_name,
            password_hash=password_hash,
            terms_version=terms_version,
            terms_accepted_at=registered_at,
            registered_at=registered_at,
            birth_date=birth_date,
        )
        .on_conflict_do_nothing(index_elements=[User.phone])
        .returning(User)
    )
    return (await session.scalars(stmt)).one_or_none()


async def get_by_phone(session: AsyncSession, phone: str) -> User | None:
    return (await session.scalars(select(User).where(User.phone == phone))).one_or_none()


async def get_by_id(session: AsyncSession, user_id: UUID) -> User | None:
    return await session.get(User, user_id)


async def get_by_login(session: AsyncSession, kind: str, value: str) -> User | None:
    column = {"phone": User.phone, "email": User.email, "username": User.username}[kind]
    return (await session.scalars(select(User).where(column == value))).one_or_none()
