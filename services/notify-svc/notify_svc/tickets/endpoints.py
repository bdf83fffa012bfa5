"""Users report problems and follow their tickets at /v1/tickets; staff work the queue at
/v1/admin/tickets (permissions `tickets:read`, `tickets:manage` from the kit's table)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import ReportKind, TicketPriority, TicketStatus
from kit.app import RuntimeDep
from kit.audit import audited, row_state
from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.db import ReadSessionDep, SessionDep
from kit.ratelimit import rate_class
from notify_svc.context import ContextDep, NotifyContext
from notify_svc.models import Ticket, TicketEntry
from notify_svc.notices.endpoints import read_limited
from notify_svc.notices.schemas import ImageOut
from notify_svc.tickets import repository as repo
from notify_svc.tickets import service
from notify_svc.tickets.lifecycle import Action
from notify_svc.tickets.schemas import (
    AssignIn,
    EntryOut,
    PriorityIn,
    ReplyIn,
    ReportIn,
    StaffReplyIn,
    StaffTicketOut,
    StaffTicketPage,
    TicketOut,
    TicketPage,
)

router = APIRouter(prefix="/v1/tickets", tags=["tickets"], dependencies=[user_scope("support")])
staff_router = APIRouter(prefix="/v1/admin/tickets", tags=["tickets (staff)"])

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_before` of the previous page")]
Reader = Annotated[Principal, Depends(require_permission("tickets:read"))]
Manager = Annotated[Principal, Depends(require_permission("tickets:manage"))]


def _fields(ticket: Ticket) -> dict[str, object]:
    return {
        "ticket_id": ticket.id,
        "kind": ReportKind(ticket.kind),
        "status": TicketStatus(ticket.status),
        "priority": TicketPriority(ticket.priority),
        "description": ticket.description,
        "rental_id": ticket.rental_id,
        "bank_id": ticket.bank_id,
        "cabinet_id": ticket.cabinet_id,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "sla_due_at": ticket.sla_due_at,
        "overdue": service.is_overdue(ticket, service.now_utc()),
        "resolved_at": ticket.resolved_at,
        "closed_at": ticket.closed_at,
    }


def _user_entry(entry: TicketEntry) -> EntryOut:
    author = {"user": "you", "staff": "support"}.get(entry.author_kind, "system")
    return EntryOut(entry_id=entry.id, author=author, body=entry.body, created_at=entry.created_at)


def _staff_entry(entry: TicketEntry) -> EntryOut:
    author = "user" if entry.author_kind == "user" else entry.author
    return EntryOut(
        entry_id=entry.id, author=author, internal=entry.internal, body=entry.body, created_at=entry.created_at
    )


def _user_out(
    ticket: Ticket, entries: list[TicketEntry] | None = None, photos: list[ImageOut] | None = None
) -> TicketOut:
    thread = [_user_entry(e) for e in entries] if entries is not None else None
    return TicketOut.model_validate(_fields(ticket) | {"entries": thread, "photos": photos})


def _staff_out(
    ticket: Ticket, entries: list[TicketEntry] | None = None, photos: list[ImageOut] | None = None
) -> StaffTicketOut:
    thread = [_staff_entry(e) for e in entries] if entries is not None else None
    extra = {
        "user_id": ticket.user_id,
        "assignee": ticket.assignee,
        "overdue_alerted_at": ticket.overdue_alerted_at,
        "entries": thread,
        "photos": photos,
    }
    return StaffTicketOut.model_validate(_fields(ticket) | extra)


# ---- users ----------------------------------------------------------------------------------


@router.post("", status_code=201)
async def report(body: ReportIn, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> TicketOut:
    """Report a faulty bank, a damaged cable, abuse, an app problem or anything else; with or
    without a rental. A faulty bank or damaged cable needs the bank's code: that bank is then not
    lent to anyone until staff have looked at it."""
    ticket = await service.open_ticket(session, runtime, user.user_id, body)
    return _user_out(ticket, [])


@router.get("")
async def my_tickets(
    user: CurrentUser, session: ReadSessionDep, limit: Limit = 20, before: Cursor = None
) -> TicketPage:
    page = await service.user_tickets(session, user.user_id, limit=limit, before=before)
    return TicketPage(items=[_user_out(t) for t in page.items], next_before=page.next_before)


@router.get("/{ticket_id}")
async def my_ticket(ticket_id: uuid.UUID, user: CurrentUser, session: ReadSessionDep, context: ContextDep) -> TicketOut:
    ticket = await service.own_ticket(session, user.user_id, ticket_id)
    entries = await service.entries_of(session, ticket, include_internal=False)
    return _user_out(ticket, entries, await _photos(session, context, ticket))


async def _photos(session: AsyncSession, context: NotifyContext, ticket: Ticket) -> list[ImageOut]:
    return [
        ImageOut(image_id=i, content_type=t, size=n, url=context.signer.url(i))
        for i, t, n in await repo.photos_of(session, ticket.id)
    ]


@router.post(
    "/{ticket_id}/photos",
    status_code=201,
    dependencies=[rate_class("upload")],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def add_photo(
    ticket_id: uuid.UUID, request: Request, user: CurrentUser, session: SessionDep, context: ContextDep
) -> ImageOut:
    """A photo of the fault (PNG, JPEG, GIF or WebP, recognised by content) as the request body."""
    data = await read_limited(request, context.settings.report_photo_max_bytes)
    photo = await service.add_photo(
        session, user.user_id, ticket_id, data, max_photos=context.settings.report_max_photos
    )
    return ImageOut(
        image_id=photo.id, content_type=photo.content_type, size=photo.size, url=context.signer.url(photo.id)
    )


@router.post("/{ticket_id}/replies", status_code=201)
async def reply(
    ticket_id: uuid.UUID, body: ReplyIn, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> EntryOut:
    return _user_entry(await service.user_reply(session, runtime, user.user_id, ticket_id, body.text))


@router.post("/{ticket_id}/close")
async def close(ticket_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> TicketOut:
    return _user_out(await service.user_action(session, runtime, user.user_id, ticket_id, Action.CLOSE))


@router.post("/{ticket_id}/reopen")
async def reopen(ticket_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> TicketOut:
    return _user_out(await service.user_action(session, runtime, user.user_id, ticket_id, Action.REOPEN))


# ---- staff ----------------------------------------------------------------------------------


@staff_router.get("")
async def search(
    _: Reader,
    session: ReadSessionDep,
    status: Annotated[list[TicketStatus] | None, Query(max_length=6)] = None,
    kind: ReportKind | None = None,
    priority: TicketPriority | None = None,
    assignee: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    unassigned: bool = False,
    overdue: bool = False,
    user_id: uuid.UUID | None = None,
    bank_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100, description="Text in the report")] = None,
    limit: Limit = 50,
    before: Cursor = None,
) -> StaffTicketPage:
    flt = repo.TicketFilter(
        status=[s.value for s in status or ()],
        kind=kind.value if kind else None,
        priority=priority.value if priority else None,
        assignee=assignee,
        unassigned=unassigned,
        overdue_at=service.now_utc() if overdue else None,
        user_id=user_id,
        bank_id=bank_id,
        text=q,
    )
    page = await service.search(session, flt, limit=limit, before=before)
    return StaffTicketPage(items=[_staff_out(t) for t in page.items], next_before=page.next_before)


@staff_router.get("/{ticket_id}")
async def staff_view(ticket_id: uuid.UUID, _: Reader, session: ReadSessionDep, context: ContextDep) -> StaffTicketOut:
    ticket = await service.staff_ticket(session, ticket_id)
    entries = await service.entries_of(session, ticket, include_internal=True)
    return _staff_out(ticket, entries, await _photos(session, context, ticket))


TICKET = row_state(Ticket)


@staff_router.post("/{ticket_id}/assign", dependencies=[audited("ticket.assign", "ticket", "ticket_id", state=TICKET)])
async def assign(
    ticket_id: uuid.UUID, body: AssignIn, staff: Manager, session: SessionDep, runtime: RuntimeDep
) -> StaffTicketOut:
    return _staff_out(await service.assign(session, runtime, ticket_id, body.assignee, staff.subject))


@staff_router.post(
    "/{ticket_id}/replies", status_code=201, dependencies=[audited("ticket.reply", "ticket", "ticket_id", state=TICKET)]
)
async def staff_reply(
    ticket_id: uuid.UUID, body: StaffReplyIn, staff: Manager, session: SessionDep, runtime: RuntimeDep
) -> EntryOut:
    """A reply the user sees in the ticket and in the inbox (category `service`)."""
    entry = await service.staff_reply(
        session, runtime, ticket_id, body.text, staff.subject, wait_for_user=body.wait_for_user
    )
    return _staff_entry(entry)


@staff_router.post(
    "/{ticket_id}/notes", status_code=201, dependencies=[audited("ticket.note", "ticket", "ticket_id", state=TICKET)]
)
async def note(ticket_id: uuid.UUID, body: ReplyIn, staff: Manager, session: SessionDep) -> EntryOut:
    """An internal note: staff only, never shown to the user."""
    return _staff_entry(await service.add_note(session, ticket_id, body.text, staff.subject))


@staff_router.post(
    "/{ticket_id}/priority", dependencies=[audited("ticket.priority", "ticket", "ticket_id", state=TICKET)]
)
async def priority(ticket_id: uuid.UUID, body: PriorityIn, staff: Manager, session: SessionDep) -> StaffTicketOut:
    return _staff_out(await service.set_priority(session, ticket_id, body.priority, staff.subject))


@staff_router.post(
    "/{ticket_id}/resolve", dependencies=[audited("ticket.resolve", "ticket", "ticket_id", state=TICKET)]
)
async def resolve(ticket_id: uuid.UUID, staff: Manager, session: SessionDep, runtime: RuntimeDep) -> StaffTicketOut:
    return _staff_out(await service.staff_action(session, runtime, ticket_id, Action.RESOLVE, staff.subject))


@staff_router.post("/{ticket_id}/close", dependencies=[audited("ticket.close", "ticket", "ticket_id", state=TICKET)])
async def staff_close(ticket_id: uuid.UUID, staff: Manager, session: SessionDep, runtime: RuntimeDep) -> StaffTicketOut:
    return _staff_out(await service.staff_action(session, runtime, ticket_id, Action.CLOSE, staff.subject))


@staff_router.post("/{ticket_id}/reopen", dependencies=[audited("ticket.reopen", "ticket", "ticket_id", state=TICKET)])
async def staff_reopen(
    ticket_id: uuid.UUID, staff: Manager, session: SessionDep, runtime: RuntimeDep
) -> StaffTicketOut:
    return _staff_out(await service.staff_action(session, runtime, ticket_id, Action.REOPEN, staff.subject))
