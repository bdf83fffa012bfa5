"""SQL of notices and their images. Never commits. (The inbox reads published notices in
`messages.repository`.)"""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import Notice, NoticeImage


def add(session: AsyncSession, row: Notice | NoticeImage) -> None:
    session.add(row)


async def get(session: AsyncSession, notice_id: uuid.UUID, *, for_update: bool = False) -> Notice | None:
    stmt = select(Notice).where(Notice.id == notice_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def recent(session: AsyncSession, limit: int) -> Sequence[Notice]:
    stmt = select(Notice).order_by(Notice.created_at.desc(), Notice.id.desc()).limit(limit)
    return (await session.scalars(stmt)).all()


async def image_count(session: AsyncSession, notice_id: uuid.UUID) -> int:
    stmt = select(func.count()).select_from(NoticeImage).where(NoticeImage.notice_id == notice_id)
    return int((await session.execute(stmt)).scalar_one())


async def images_of(
    session: AsyncSession, notice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[uuid.UUID, str]]]:
    """(image id, content type) per notice, in upload order; the bytes are not read."""
    if not notice_ids:
        return {}
    stmt = (
        select(NoticeImage.notice_id, NoticeImage.id, NoticeImage.content_type)
        .where(NoticeImage.notice_id.in_(notice_ids))
        .order_by(NoticeImage.notice_id, NoticeImage.position)
    )
    found: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = {}
    for notice_id, image_id, content_type in (await session.execute(stmt)).all():
        found.setdefault(notice_id, []).append((image_id, content_type))
    return found


async def published_image(session: AsyncSession, image_id: uuid.UUID) -> NoticeImage | None:
    stmt = (
        select(NoticeImage)
        .join(Notice, Notice.id == NoticeImage.notice_id)
        .where(NoticeImage.id == image_id, Notice.published_at.is_not(None))
    )
    return (await session.scalars(stmt)).first()


def stamp_published(notice: Notice, at: datetime) -> None:
    notice.published_at = at
