"""System and operations notices (6.1.6, 6.3.8): staff write one, attach images (checked by their
bytes, size- and count-limited), publish it; from then on it is in every user's inbox. Images are
served only through expiring signed URLs."""

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import NoticeKind, NoticePublished
from kit.app import Runtime
from kit.errors import BusinessError, Conflict, NotFound
from notify_svc.campaigns import service as campaigns
from notify_svc.models import Notice, NoticeImage
from notify_svc.notices import repository as repo
from notify_svc.notices.images import ALLOWED_TYPES, sniff
from notify_svc.notices.schemas import NoticeIn

log = logging.getLogger(__name__)


class NoticeNotFound(NotFound):
    code = "notice_not_found"
    title = "Notice not found"


class NoticeAlreadyPublished(Conflict):
    code = "notice_already_published"
    title = "The notice is published and can no longer change"


class TooManyImages(Conflict):
    code = "too_many_images"
    title = "The notice has as many images as it may have"


class ImageTooLarge(BusinessError):
    status = 413
    code = "image_too_large"
    title = "The image is larger than allowed"


class NotAnImage(BusinessError):
    status = 415
    code = "not_an_image"
    title = "The upload is not an image of an accepted format"


class ImageNotFound(NotFound):
    code = "image_not_found"
    title = "Image not found"


class BadSignature(BusinessError):
    status = 403
    code = "invalid_signature"
    title = "The image URL is not valid"


class UrlExpired(BusinessError):
    status = 403
    code = "url_expired"
    title = "The image URL has expired; fetch the message again for a fresh one"


async def create(session: AsyncSession, body: NoticeIn, by: str) -> Notice:
    notice = Notice(
        id=uuid.uuid4(),
        kind=body.kind.value,
        title=body.title,
        body=body.text,
        created_by=by,
        created_at=datetime.now(UTC),
    )
    repo.add(session, notice)
    return notice


async def get(session: AsyncSession, notice_id: uuid.UUID, *, lock: bool = False) -> Notice:
    notice = await repo.get(session, notice_id, for_update=lock)
    if notice is None:
        raise NoticeNotFound(f"No notice {notice_id}")
    return notice


async def add_image(session: AsyncSession, notice_id: uuid.UUID, data: bytes, *, max_images: int) -> NoticeImage:
    notice = await get(session, notice_id, lock=True)
    if notice.published_at is not None:
        raise NoticeAlreadyPublished(f"Notice {notice_id} is published")
    if await repo.image_count(session, notice_id) >= max_images:
        raise TooManyImages(f"A notice has at most {max_images} images", max_images=max_images)
    content_type = sniff(data)
    if content_type is None:
        raise NotAnImage(f"Send the image's bytes: one of {', '.join(sorted(ALLOWED_TYPES))}")
    image = NoticeImage(
        id=uuid.uuid4(),
        notice_id=notice_id,
        position=await repo.image_count(session, notice_id),
        content_type=content_type,
        size=len(data),
        data=data,
        created_at=datetime.now(UTC),
    )
    repo.add(session, image)
    return image


async def publish(session: AsyncSession, runtime: Runtime, notice_id: uuid.UUID, by: str) -> Notice:
    notice = await get(session, notice_id, lock=True)
    if notice.published_at is not None:
        raise NoticeAlreadyPublished(f"Notice {notice_id} is already published")
    now = datetime.now(UTC)
    repo.stamp_published(notice, now)
    await runtime.publish(
        session,
        NoticePublished(
            notice_id=notice.id,
            kind=NoticeKind(notice.kind),
            title=notice.title,
            image_count=await repo.image_count(session, notice.id),
            by=by,
            at=now,
        ),
        key=str(notice.id),
    )
    await campaigns.push_notice(session, notice.id, notice.title, notice.body, by)
    log.info("notice published", extra={"notice_id": str(notice.id), "kind": notice.kind})
    return notice
