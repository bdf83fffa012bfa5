"""All SQL of the inbox. Never commits."""

import uuid
from datetime import datetime

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import Message


async def add_message(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    category: str,
    title: str,
    body: str,
    created_at: datetime,
    source_event_id: uuid.UUID | None,
) -> uuid.UUID | None:
    """Insert a message; None when a message for `source_event_id` already exists."""
    stmt = (
        insert(Message)
        .values(
            id=uuid.uuid4(),
            user_id=user_id,
            category=category,
            title=title,
            body=body,
            created_at=created_at,
            source_event_id=source_event_id,
        )
        .on_conflict_do_nothing(index_elements=[Message.source_event_id])
        .returning(Message.id)
    )
    return (await session.execute(stmt)).scalar()


async def list_messages(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    unread_only: bool,
    category: str | None,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[Message]:
    stmt = select(Message).where(Message.user_id == user_id)
    if unread_only:
        stmt = stmt.where(Message.read_at.is_(None))
    if category is not None:
        stmt = stmt.where(Message.category == category)
    if before is not None:
        stmt = stmt.where(tuple_(Message.created_at, Message.id) < tuple_(*before))
    stmt = stmt.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def unread_by_category(session: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    stmt = (
        select(Message.category, func.count())
        .where(Message.user_id == user_id, Message.read_at.is_(None))
        .group_by(Message.category)
    )
    return {category: count for category, count in (await session.execute(stmt)).all()}


async def mark_read(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID, at: datetime) -> Message | None:
    """Set `read_at` once (a second call keeps the first time); None when the user has no such message."""
    await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.user_id == user_id, Message.read_at.is_(None))
        .values(read_at=at)
    )
    stmt = select(Message).where(Message.id == message_id, Message.user_id == user_id)
    return (await session.scalars(stmt.execution_options(populate_existing=True))).first()


async def mark_all_read(session: AsyncSession, user_id: uuid.UUID, category: str | None, at: datetime) -> int:
    stmt = update(Message).where(Message.user_id == user_id, Message.read_at.is_(None))
    if category is not None:
        stmt = stmt.where(Message.category == category)
    result = await session.execute(stmt.values(read_at=at).returning(Message.id))
    return len(result.all())


async def delete_message(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(Message).where(Message.id == message_id, Message.user_id == user_id).returning(Message.id)
    )
    return result.first() is not None
