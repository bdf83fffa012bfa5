"""Inbox rules: users see and mark only their own messages (and the published notices, which are
everyone's); pages are cut by an opaque cursor."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from kit import pagination
from kit.errors import NotFound
from kit.pagination import encode_cursor
from kit.periodic import Alarm
from notify_svc.campaigns import service as campaigns
from notify_svc.messages import repository
from notify_svc.messages.repository import InboxItem
from notify_svc.models import Category
from notify_svc.notices import repository as notices
from notify_svc.push import service as push
from notify_svc.texts import Text


class MessageNotFound(NotFound):
    code = "message_not_found"
    title = "Message not found"


@dataclass(frozen=True)
class Page:
    items: list[InboxItem]
    next_before: str | None
    images: dict[uuid.UUID, list[tuple[uuid.UUID, str]]]  # notice id -> (image id, content type)


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    return pagination.decode_cursor(cursor, detail="`before` is not a cursor this service returned as `next_before`")


async def list_messages(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    unread_only: bool,
    before: str | None,
    category: Category | None = None,
) -> Page:
    cursor = decode_cursor(before) if before else None
    rows = await repository.list_inbox(
        session,
        user_id,
        limit=limit + 1,
        unread_only=unread_only,
        category=category.value if category else None,
        before=cursor,
    )
    items = rows[:limit]
    next_before = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    images = await notices.images_of(session, [i.id for i in items if i.notice])
    return Page(items=items, next_before=next_before, images=images)


async def mark_read(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID) -> InboxItem:
    item = await repository.mark_read(session, user_id, message_id, datetime.now(UTC))
    if item is None:
        raise MessageNotFound(f"You have no message {message_id}")
    if item.category == Category.MARKETING.value:
        await campaigns.record(session, user_id, message_id, "open")
    return item


async def click(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """The user followed a campaign message's link (counted once per recipient, and as an open)."""
    if not await campaigns.record(session, user_id, message_id, "click"):
        if not await repository.owns(session, user_id, message_id):
            raise MessageNotFound(f"You have no message {message_id}")
        raise campaigns.NotACampaignMessage("This message is not a campaign's")


async def images_of(session: AsyncSession, item: InboxItem) -> list[tuple[uuid.UUID, str]]:
    return (await notices.images_of(session, [item.id])).get(item.id, []) if item.notice else []


async def unread_count(session: AsyncSession, user_id: uuid.UUID) -> dict[Category, int]:
    counts = await repository.unread_by_category(session, user_id)
    return {category: counts.get(category.value, 0) for category in Category}


async def mark_all_read(session: AsyncSession, user_id: uuid.UUID, category: Category | None) -> int:
    return await repository.mark_all_read(session, user_id, category.value if category else None, datetime.now(UTC))


async def delete(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID) -> None:
    if not await repository.delete_item(session, user_id, message_id, datetime.now(UTC)):
        raise MessageNotFound(f"You have no message {message_id}")


async def deliver(
    session: AsyncSession,
    user_id: uuid.UUID,
    text: Text,
    *,
    source_event_id: uuid.UUID | None,
    pushes: Alarm | None = None,
) -> uuid.UUID | None:
    """Put a message in a user's inbox and a push of it in the push queue (same transaction; `pushes`
    wakes the push worker after commit): the message id, or None when `source_event_id` was already
    delivered."""
    message_id = await repository.add_message(
        session,
        user_id=user_id,
        category=text.category.value,
        title=text.title,
        body=text.body,
        created_at=datetime.now(UTC),
        source_event_id=source_event_id,
    )
    if message_id is not None:
        push.enqueue(
            session,
            pushes,
            user_id=user_id,
            message_id=message_id,
            title=text.title,
            body=text.body,
            critical=text.critical,
        )
    return message_id
