import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from kit.auth import CurrentUser, require_permission, user_scope
from kit.db import ReadSessionDep, SessionDep
from notify_svc.context import ContextDep
from notify_svc.messages import service
from notify_svc.messages.repository import InboxItem
from notify_svc.messages.schemas import ImageLink, MarkedRead, MessageOut, MessagePage, UnreadCount
from notify_svc.models import Category
from notify_svc.notices.signing import UrlSigner

router = APIRouter(prefix="/v1/messages", tags=["messages"], dependencies=[user_scope("messages")])
# Support reads a user's inbox (what the user was told, and whether they read it): read only.
staff_router = APIRouter(prefix="/v1/admin/users", tags=["messages (staff)"])


def _out(item: InboxItem, images: list[tuple[uuid.UUID, str]], signer: UrlSigner) -> MessageOut:
    return MessageOut(
        message_id=item.id,
        category=Category(item.category),
        title=item.title,
        body=item.body,
        created_at=item.created_at,
        read_at=item.read_at,
        images=[ImageLink(url=signer.url(image_id), content_type=kind) for image_id, kind in images],
    )


@router.get("")
async def list_messages(
    user: CurrentUser,
    session: ReadSessionDep,
    context: ContextDep,
    unread_only: bool = False,
    category: Category | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=200, description="`next_before` of the previous page")] = None,
) -> MessagePage:
    page = await service.list_messages(
        session, user.user_id, limit=limit, unread_only=unread_only, before=before, category=category
    )
    items = [_out(m, page.images.get(m.id, []), context.signer) for m in page.items]
    return MessagePage(items=items, next_before=page.next_before)


@router.get("/unread-count")
async def unread_count(user: CurrentUser, session: ReadSessionDep) -> UnreadCount:
    counts = await service.unread_count(session, user.user_id)
    return UnreadCount(unread=sum(counts.values()), by_category=counts)


@router.post("/read-all")
async def mark_all_read(user: CurrentUser, session: SessionDep, category: Category | None = None) -> MarkedRead:
    return MarkedRead(marked=await service.mark_all_read(session, user.user_id, category))


@router.post("/{message_id}/read")
async def mark_read(message_id: uuid.UUID, user: CurrentUser, session: SessionDep, context: ContextDep) -> MessageOut:
    item = await service.mark_read(session, user.user_id, message_id)
    return _out(item, await service.images_of(session, item), context.signer)


@router.post("/{message_id}/click", status_code=204)
async def click(message_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """A campaign message's link was followed: counted once per recipient (`409 not_a_campaign_message`
    for any other message)."""
    await service.click(session, user.user_id, message_id)
    return Response(status_code=204)


@router.delete("/{message_id}", status_code=204)
async def delete_message(message_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    await service.delete(session, user.user_id, message_id)
    return Response(status_code=204)


@staff_router.get("/{user_id}/messages", dependencies=[Depends(require_permission("tickets:read"))])
async def user_messages(
    user_id: uuid.UUID,
    session: ReadSessionDep,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=200, description="`next_before` of the previous page")] = None,
) -> MessagePage:
    """A user's inbox as the user sees it (messages and published notices, newest first), for support."""
    page = await service.list_messages(session, user_id, limit=limit, unread_only=False, before=before, category=None)
    items = [_out(m, page.images.get(m.id, []), context.signer) for m in page.items]
    return MessagePage(items=items, next_before=page.next_before)
