"""Staff write and publish notices at /v1/admin/notices (permission `notices:send`); images are
fetched by anyone holding a signed, expiring URL at /v1/media/{image_id}."""

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import NoticeKind
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited, row_state
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep, SessionDep, after_commit
from kit.ratelimit import rate_class
from notify_svc.context import ContextDep, NotifyContext
from notify_svc.models import Notice, NoticeImage, TicketPhoto
from notify_svc.notices import repository as repo
from notify_svc.notices import service
from notify_svc.notices.schemas import ImageOut, NoticeIn, NoticeList, NoticeOut
from notify_svc.tickets import repository as tickets_repo

staff_router = APIRouter(prefix="/v1/admin/notices", tags=["notices (staff)"])
media_router = APIRouter(prefix="/v1/media", tags=["media"])

Sender = Annotated[Principal, Depends(require_permission("notices:send"))]


async def _out(session: AsyncSession, context: NotifyContext, notice: Notice) -> NoticeOut:
    images = (await repo.images_of(session, [notice.id])).get(notice.id, [])
    return NoticeOut(
        notice_id=notice.id,
        kind=NoticeKind(notice.kind),
        title=notice.title,
        text=notice.body,
        created_by=notice.created_by,
        created_at=notice.created_at,
        published_at=notice.published_at,
        images=[ImageOut(image_id=i, content_type=t, url=context.signer.url(i)) for i, t in images],
    )


NOTICE = row_state(Notice)


@staff_router.post("", status_code=201, dependencies=[audited("notice.create", "notice", state=NOTICE)])
async def create(
    body: NoticeIn, staff: Sender, session: SessionDep, context: ContextDep, audit: CurrentAudit
) -> NoticeOut:
    """A draft: attach images, then publish it."""
    notice = await service.create(session, body, staff.subject)
    audit.note(target_id=notice.id)
    return await _out(session, context, notice)


@staff_router.get("")
async def recent(
    _: Sender, session: ReadSessionDep, context: ContextDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> NoticeList:
    return NoticeList(items=[await _out(session, context, n) for n in await repo.recent(session, limit)])


@staff_router.get("/{notice_id}")
async def one(notice_id: uuid.UUID, _: Sender, session: ReadSessionDep, context: ContextDep) -> NoticeOut:
    return await _out(session, context, await service.get(session, notice_id))


@staff_router.post(
    "/{notice_id}/images",
    status_code=201,
    dependencies=[audited("notice.add_image", "notice", "notice_id"), rate_class("upload")],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_image(
    notice_id: uuid.UUID, request: Request, _: Sender, session: SessionDep, context: ContextDep, audit: CurrentAudit
) -> ImageOut:
    """The image's bytes as the request body (PNG, JPEG, GIF or WebP, recognised by content; the
    declared type and any file name are ignored)."""
    data = await read_limited(request, context.settings.notice_image_max_bytes)
    image = await service.add_image(session, notice_id, data, max_images=context.settings.notice_max_images)
    audit.created(notice_id, {"image_id": str(image.id), "content_type": image.content_type, "size": image.size})
    return ImageOut(
        image_id=image.id, content_type=image.content_type, size=image.size, url=context.signer.url(image.id)
    )


@staff_router.post(
    "/{notice_id}/publish", dependencies=[audited("notice.publish", "notice", "notice_id", state=NOTICE)]
)
async def publish(
    notice_id: uuid.UUID, staff: Sender, session: SessionDep, runtime: RuntimeDep, context: ContextDep
) -> NoticeOut:
    """Into every user's inbox, now; pushed to every phone by the campaign sender's batches."""
    notice = await service.publish(session, runtime, notice_id, staff.subject)
    after_commit(session, lambda: context.campaigns.ring_at(datetime.now(UTC)))
    return await _out(session, context, notice)


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise service.ImageTooLarge(f"At most {limit} bytes", max_bytes=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise service.ImageTooLarge(f"At most {limit} bytes", max_bytes=limit)
        chunks.append(chunk)
    return b"".join(chunks)


@media_router.get("/{image_id}", responses={200: {"content": {"image/*": {}}}})
async def media(
    image_id: uuid.UUID,
    session: ReadSessionDep,
    context: ContextDep,
    exp: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    if not context.signer.valid(image_id, exp, sig):
        raise service.BadSignature()
    remaining = exp - int(time.time())
    if remaining <= 0:
        raise service.UrlExpired()
    image: NoticeImage | TicketPhoto | None = await repo.published_image(session, image_id)
    if image is None:  # a photo on a report: its signed URL went only to the ticket's user and staff
        image = await tickets_repo.photo(session, image_id)
    if image is None:
        raise service.ImageNotFound(f"No image {image_id}")
    return Response(
        content=image.data,
        media_type=image.content_type,
        headers={
            "Cache-Control": f"private, max-age={remaining}",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline",
        },
    )
