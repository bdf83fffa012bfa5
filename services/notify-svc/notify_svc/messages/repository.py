"""All SQL of the inbox: the user's own messages, and the published notices every user sees (read
from the one `notices` row, with this user's receipt if they read or deleted it). Never commits."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, literal, select, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import Message, Notice, NoticeReceipt

NOTICE_CATEGORIES = frozenset({"system", "operations"})  # a notice's kind is its inbox category


@dataclass(frozen=True)
class InboxItem:
    id: uuid.UUID
    category: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None
    notice: bool


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


def _receipt_join(user_id: uuid.UUID) -> ColumnElement[bool]:
    return and_(NoticeReceipt.notice_id == Notice.id, NoticeReceipt.user_id == user_id)


def _messages(user_id: uuid.UUID) -> Any:  # a Select of InboxItem's columns
    return select(
        Message.id,
        Message.category,
        Message.title,
        Message.body,
        Message.created_at,
        Message.read_at,
        false().label("notice"),
    ).where(Message.user_id == user_id)


def _notices(user_id: uuid.UUID) -> Any:  # a Select of InboxItem's columns
    return (
        select(
            Notice.id,
            Notice.kind.label("category"),
            Notice.title,
            Notice.body,
            Notice.published_at.label("created_at"),
            NoticeReceipt.read_at,
            true().label("notice"),
        )
        .select_from(Notice)
        .outerjoin(NoticeReceipt, _receipt_join(user_id))
        .where(Notice.published_at.is_not(None), NoticeReceipt.deleted_at.is_(None))
    )


async def list_inbox(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    unread_only: bool,
    category: str | None,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[InboxItem]:
    messages, notices = _messages(user_id), _notices(user_id)
    if unread_only:
        messages = messages.where(Message.read_at.is_(None))
        notices = notices.where(NoticeReceipt.read_at.is_(None))
    if category is not None:
        messages = messages.where(Message.category == category)
        notices = notices.where(Notice.kind == category)
    if before is not None:
        messages = messages.where(tuple_(Message.created_at, Message.id) < tuple_(*before))
        notices = notices.where(tuple_(Notice.published_at, Notice.id) < tuple_(*before))
    # Each side is cut to `limit` on its own index before the merge.
    messages = messages.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
    notices = notices.order_by(Notice.published_at.desc(), Notice.id.desc()).limit(limit)
    both = messages.union_all(notices).subquery()
    stmt = select(both).order_by(both.c.created_at.desc(), both.c.id.desc()).limit(limit)
    return [InboxItem(*row) for row in (await session.execute(stmt)).all()]


async def unread_by_category(session: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    counts: dict[str, int] = {}
    messages = (
        select(Message.category, func.count())
        .where(Message.user_id == user_id, Message.read_at.is_(None))
        .group_by(Message.category)
    )
    notices = (
        select(Notice.kind, func.count())
        .select_from(Notice)
        .outerjoin(NoticeReceipt, _receipt_join(user_id))
        .where(Notice.published_at.is_not(None), NoticeReceipt.deleted_at.is_(None), NoticeReceipt.read_at.is_(None))
        .group_by(Notice.kind)
    )
    for stmt in (messages, notices):
        for category, count in (await session.execute(stmt)).all():
            counts[category] = counts.get(category, 0) + count
    return counts


async def _notice_item(session: AsyncSession, user_id: uuid.UUID, notice_id: uuid.UUID) -> InboxItem | None:
    stmt = _notices(user_id).where(Notice.id == notice_id)
    row = (await session.execute(stmt)).first()
    return InboxItem(*row) if row is not None else None


async def mark_read(session: AsyncSession, user_id: uuid.UUID, item_id: uuid.UUID, at: datetime) -> InboxItem | None:
    """Set `read_at` once (a second call keeps the first time); None when the user has no such item."""
    await session.execute(
        update(Message)
        .where(Message.id == item_id, Message.user_id == user_id, Message.read_at.is_(None))
        .values(read_at=at)
    )
    row = (await session.execute(_messages(user_id).where(Message.id == item_id))).first()
    if row is not None:
        return InboxItem(*row)
    if await _notice_item(session, user_id, item_id) is None:
        return None
    stmt = insert(NoticeReceipt).values(notice_id=item_id, user_id=user_id, read_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[NoticeReceipt.notice_id, NoticeReceipt.user_id],
        set_={"read_at": func.coalesce(NoticeReceipt.read_at, stmt.excluded.read_at)},
    )
    await session.execute(stmt)
    return await _notice_item(session, user_id, item_id)


async def owns(session: AsyncSession, user_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    """The user has this message, or it is a published notice they did not delete."""
    mine = select(Message.id).where(Message.id == item_id, Message.user_id == user_id)
    return (await session.execute(mine)).first() is not None or await _notice_item(
        session, user_id, item_id
    ) is not None


async def mark_all_read(session: AsyncSession, user_id: uuid.UUID, category: str | None, at: datetime) -> int:
    stmt = update(Message).where(Message.user_id == user_id, Message.read_at.is_(None))
    if category is not None:
        stmt = stmt.where(Message.category == category)
    marked = len((await session.execute(stmt.values(read_at=at).returning(Message.id))).all())
    if category is not None and category not in NOTICE_CATEGORIES:
        return marked
    # One receipt per published notice this user has not read: as many rows as there are notices.
    unread = select(Notice.id, literal(user_id), literal(at)).where(Notice.published_at.is_not(None))
    if category is not None:
        unread = unread.where(Notice.kind == category)
    upsert = insert(NoticeReceipt).from_select(["notice_id", "user_id", "read_at"], unread)
    upsert = upsert.on_conflict_do_update(
        index_elements=[NoticeReceipt.notice_id, NoticeReceipt.user_id],
        set_={"read_at": upsert.excluded.read_at},
        where=and_(NoticeReceipt.read_at.is_(None), NoticeReceipt.deleted_at.is_(None)),
    )
    return marked + len((await session.execute(upsert.returning(NoticeReceipt.notice_id))).all())


async def delete_item(session: AsyncSession, user_id: uuid.UUID, item_id: uuid.UUID, at: datetime) -> bool:
    result = await session.execute(
        delete(Message).where(Message.id == item_id, Message.user_id == user_id).returning(Message.id)
    )
    if result.first() is not None:
        return True
    if await _notice_item(session, user_id, item_id) is None:
        return False
    stmt = insert(NoticeReceipt).values(notice_id=item_id, user_id=user_id, deleted_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[NoticeReceipt.notice_id, NoticeReceipt.user_id], set_={"deleted_at": at}
    )
    await session.execute(stmt)
    return True
