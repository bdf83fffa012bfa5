"""Human voice service: users ask for a call back at /v1/callbacks (scope `support`) and read the hotline
at /v1/support/hotline; staff work the queue at /v1/admin/callbacks (`tickets:read` to see it,
`tickets:manage` to place calls); the telephony provider reports outcomes to /v1/telephony/events
(authenticated by its signature, not a token)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from kit.app import RuntimeDep
from kit.audit import audited, row_state
from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.db import ReadSessionDep, SessionDep
from notify_svc.callbacks import repository as repo
from notify_svc.callbacks import service
from notify_svc.callbacks.lifecycle import OPEN
from notify_svc.callbacks.provider import SIGNATURE_HEADER, TIMESTAMP_HEADER
from notify_svc.callbacks.schemas import CallbackIn, CallbackList, CallbackOut, HotlineOut
from notify_svc.context import ContextDep
from notify_svc.models import CallbackRequest, CallbackStatus

router = APIRouter(prefix="/v1/callbacks", tags=["voice"], dependencies=[user_scope("support")])
hotline_router = APIRouter(prefix="/v1/support", tags=["voice"])
staff_router = APIRouter(prefix="/v1/admin/callbacks", tags=["voice (staff)"])
provider_router = APIRouter(prefix="/v1/telephony", tags=["voice (provider)"])

Reader = Annotated[Principal, Depends(require_permission("tickets:read"))]
Manager = Annotated[Principal, Depends(require_permission("tickets:manage"))]
MAX_EVENT_BYTES = 8 * 1024


def _out(c: CallbackRequest) -> CallbackOut:
    return CallbackOut(
        callback_id=c.id,
        ticket_id=c.ticket_id,
        phone_suffix=c.phone[-4:],
        topic=c.topic,
        preferred_at=c.preferred_at,
        status=c.status,
        attempts=c.attempts,
        duration_s=c.duration_s,
        failure=c.failure,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


@router.post("", status_code=201)
async def ask(body: CallbackIn, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> CallbackOut:
    """Be called back: a ticket (new, or `ticket_id` of yours) in the staff queue."""
    return _out(await service.request(session, runtime, user.user_id, body))


@router.get("")
async def mine(
    user: CurrentUser, session: ReadSessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> CallbackList:
    return CallbackList(items=[_out(c) for c in await repo.of_user(session, user.user_id, limit)])


@router.post("/{callback_id}/cancel")
async def cancel(callback_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> CallbackOut:
    return _out(await service.cancel(session, user.user_id, callback_id))


@hotline_router.get("/hotline")
async def hotline(context: ContextDep) -> HotlineOut:
    """The customer service number the app shows (configured: `SUPPORT_HOTLINE`)."""
    return HotlineOut(hotline=context.settings.support_hotline, hours=context.settings.support_hotline_hours)


@staff_router.get("")
async def queue(
    _: Reader,
    session: ReadSessionDep,
    status: Annotated[list[CallbackStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> CallbackList:
    """Open requests by default, earliest wish first."""
    statuses = [s.value for s in status] if status else [s.value for s in OPEN]
    return CallbackList(items=[_out(c) for c in await repo.queue(session, statuses, limit)])


@staff_router.post(
    "/{callback_id}/call",
    dependencies=[audited("callback.call", "callback", "callback_id", state=row_state(CallbackRequest))],
)
async def call(callback_id: uuid.UUID, staff: Manager, session: SessionDep, context: ContextDep) -> CallbackOut:
    """Place the call now; its outcome arrives from the provider and lands on the ticket."""
    return _out(await service.place(session, context.telephony, callback_id, staff.subject))


@provider_router.post("/events", status_code=204)
async def provider_event(request: Request, session: SessionDep, context: ContextDep) -> Response:
    body = await request.body()
    if len(body) > MAX_EVENT_BYTES:
        raise service.MalformedEvent("The callback's body is too large")
    secret = context.settings.telephony_signing_key.get_secret_value().encode()
    await service.on_provider_event(
        session, secret, body, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER)
    )
    return Response(status_code=204)
