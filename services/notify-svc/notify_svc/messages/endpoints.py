import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from kit.auth import CurrentUser, user_scope
from kit.db import ReadSessionDep, SessionDep
from notify_svc.messages import service
from notify_svc.messages.schemas import MessageOut, MessagePage
from notify_svc.models import Category, Message

router = APIRouter(prefix="/v1/messages", tags=["messages"], dependencies=[user_scope("messages")])


def _out(message: Message) -> MessageOut:
    return MessageOut(
        message_id=message.id,
        category=Category(message.category),
        title=message.title,
        body=message.body,
        created_at=message.created_at,
        read_at=message.read_at,
    )


@router.get("")
async def list_messages(
    user: CurrentUser,
    session: ReadSessionDep,
    unread_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=200, description="`next_before` of the previous page")] = None,
) -> MessagePage:
    page = await service.list_messages(session, user.user_id, limit=limit, unread_only=unread_only, before=before)
    return MessagePage(items=[_out(m) for m in page.items], next_before=page.next_before)


@router.post("/{message_id}/read")
async def mark_read(message_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> MessageOut:
    return _out(await service.mark_read(session, user.user_id, message_id))
