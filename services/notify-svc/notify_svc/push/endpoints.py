"""Users register the phone's push token at /v1/push-tokens (scope `messages`); support sees a user's
push outcomes at /v1/admin/users/{user_id}/pushes (permission `tickets:read`)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.db import ReadSessionDep, SessionDep
from notify_svc.push import repository as repo
from notify_svc.push import service
from notify_svc.push.schemas import PushJobList, PushJobOut, PushTokenIn, PushTokenList, PushTokenOut

router = APIRouter(prefix="/v1/push-tokens", tags=["push"], dependencies=[user_scope("messages")])
staff_router = APIRouter(prefix="/v1/admin/users", tags=["push (staff)"])


@router.put("", status_code=204)
async def register(body: PushTokenIn, user: CurrentUser, session: SessionDep) -> Response:
    """Register this phone (again): a token moves to whoever registers it last."""
    await service.register(session, user.user_id, body.platform, body.token)
    return Response(status_code=204)


@router.get("")
async def mine(user: CurrentUser, session: ReadSessionDep) -> PushTokenList:
    tokens = await repo.tokens_of(session, user.user_id)
    return PushTokenList(
        items=[PushTokenOut(platform=t.platform, token_suffix=t.token[-8:], registered_at=t.created_at) for t in tokens]
    )


@router.post("/remove", status_code=204)
async def remove(body: PushTokenIn, user: CurrentUser, session: SessionDep) -> Response:
    await service.unregister(session, user.user_id, body.token)
    return Response(status_code=204)


@staff_router.get("/{user_id}/pushes")
async def pushes(
    user_id: uuid.UUID,
    _: Annotated[Principal, Depends(require_permission("tickets:read"))],
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PushJobList:
    jobs = await repo.jobs_of(session, user_id, limit)
    return PushJobList(
        items=[
            PushJobOut(
                message_id=str(j.message_id) if j.message_id else None,
                title=j.title,
                critical=j.critical,
                attempts=j.attempts,
                outcome=j.outcome,
                results=j.results,
                created_at=j.created_at,
                done_at=j.done_at,
            )
            for j in jobs
        ]
    )
