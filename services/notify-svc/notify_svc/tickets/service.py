"""Support tickets (6.1.7, 6.3.9): a user's report opens one; staff assign, reply (the reply lands in
the user's inbox), keep internal notes, set priorities and move it through `lifecycle`; an SLA clock
per priority raises one overdue alert per ticket. A report about a bank is also an event for
device-svc, which stops lending the bank until staff clear it."""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import (
    BankFaultCleared,
    BankFaultReported,
    DisputeOpened,
    DisputeResolved,
    ReportKind,
    TicketOpened,
    TicketOverdue,
    TicketPriority,
    TicketStatus,
    TicketStatusChanged,
)
from kit.app import Runtime
from kit.errors import BusinessError, NotFound
from kit.pagination import encode_cursor
from notify_svc import texts
from notify_svc.context import context_of
from notify_svc.messages import service as inbox
from notify_svc.messages.service import decode_cursor
from notify_svc.models import Ticket, TicketEntry, TicketPhoto
from notify_svc.notices.images import ALLOWED_TYPES, sniff
from notify_svc.notices.service import NotAnImage, TooManyImages
from notify_svc.tickets import lifecycle
from notify_svc.tickets import repository as repo
from notify_svc.tickets.lifecycle import Action, Actor
from notify_svc.tickets.schemas import ReportIn

log = logging.getLogger(__name__)

# How long support has to resolve a ticket of each priority (the SLA clock runs from opening, or from
# a reopening; while a ticket waits for the user no overdue alert is raised).
SLA: dict[TicketPriority, timedelta] = {
    TicketPriority.URGENT: timedelta(hours=2),
    TicketPriority.HIGH: timedelta(hours=8),
    TicketPriority.NORMAL: timedelta(hours=24),
    TicketPriority.LOW: timedelta(hours=72),
}
DEFAULT_PRIORITY: dict[ReportKind, TicketPriority] = {
    ReportKind.FAULTY_BANK: TicketPriority.HIGH,
    ReportKind.DAMAGED_CABLE: TicketPriority.HIGH,
    ReportKind.ABUSE: TicketPriority.HIGH,
    ReportKind.APP_PROBLEM: TicketPriority.NORMAL,
    ReportKind.OTHER: TicketPriority.NORMAL,
    ReportKind.DISPUTE: TicketPriority.HIGH,  # the user's money is in question
    ReportKind.CALLBACK: TicketPriority.NORMAL,
}
# Reports that say a bank itself is broken: device-svc takes the bank out of lending.
BANK_FAULT_KINDS = frozenset({ReportKind.FAULTY_BANK, ReportKind.DAMAGED_CABLE})
MAX_REPORTS_PER_HOUR = 10


class TicketNotFound(NotFound):
    code = "ticket_not_found"
    title = "Ticket not found"


class BankCodeRequired(BusinessError):
    status = 422
    code = "bank_code_required"
    title = "Say which power bank: a report about a bank needs its code"


class TooManyReports(BusinessError):
    status = 429
    code = "too_many_reports"
    title = "Too many reports in the last hour; try again later"


@dataclass(frozen=True)
class Page:
    items: list[Ticket]
    next_before: str | None


def now_utc() -> datetime:
    return datetime.now(UTC)


def is_overdue(ticket: Ticket, now: datetime) -> bool:
    return ticket.status in repo.OVERDUE_STATUSES and ticket.sla_due_at <= now


async def open_ticket(session: AsyncSession, runtime: Runtime, user_id: uuid.UUID, report: ReportIn) -> Ticket:
    now = now_utc()
    if report.kind in BANK_FAULT_KINDS and report.bank_id is None:
        raise BankCodeRequired(f"A {report.kind.value.replace('_', ' ')} report needs `bank_id`")
    if await repo.opened_since(session, user_id, now - timedelta(hours=1)) >= MAX_REPORTS_PER_HOUR:
        raise TooManyReports(f"At most {MAX_REPORTS_PER_HOUR} reports an hour", retry_after_s=3600)
    priority = DEFAULT_PRIORITY[report.kind]
    ticket = Ticket(
        id=uuid.uuid4(),
        user_id=user_id,
        kind=report.kind.value,
        status=TicketStatus.NEW.value,
        priority=priority.value,
        description=report.text,
        rental_id=report.rental_id,
        bank_id=report.bank_id,
        cabinet_id=report.cabinet_id,
        created_at=now,
        updated_at=now,
        sla_due_at=now + SLA[priority],
    )
    repo.add(session, ticket)
    await runtime.publish(
        session,
        TicketOpened(
            ticket_id=ticket.id,
            user_id=user_id,
            kind=report.kind,
            priority=priority,
            sla_due_at=ticket.sla_due_at,
            bank_id=report.bank_id,
            cabinet_id=report.cabinet_id,
            rental_id=report.rental_id,
            at=now,
        ),
        key=str(ticket.id),
    )
    if report.kind in BANK_FAULT_KINDS and report.bank_id is not None:
        await runtime.publish(
            session,
            BankFaultReported(
                ticket_id=ticket.id,
                user_id=user_id,
                bank_id=report.bank_id,
                kind=report.kind,
                cabinet_id=report.cabinet_id,
                rental_id=report.rental_id,
                at=now,
            ),
            key=report.bank_id,
        )
    log.info("ticket opened", extra={"ticket_id": str(ticket.id), "kind": report.kind.value})
    return ticket


async def _transition(
    session: AsyncSession, runtime: Runtime, ticket: Ticket, action: Action, actor: Actor, by: str, now: datetime
) -> None:
    before = lifecycle.apply(ticket, action, actor, now)
    if TicketStatus(ticket.status) is TicketStatus.REOPENED:
        ticket.sla_due_at = now + SLA[TicketPriority(ticket.priority)]
        ticket.overdue_alerted_at = None
    if before.value != ticket.status:
        await runtime.publish(
            session,
            TicketStatusChanged(
                ticket_id=ticket.id,
                user_id=ticket.user_id,
                from_status=before,
                to_status=TicketStatus(ticket.status),
                action=action.value,
                by=by,
                at=now,
            ),
            key=str(ticket.id),
        )


def _entry(ticket: Ticket, author_kind: str, author: str, body: str, now: datetime, internal: bool) -> TicketEntry:
    return TicketEntry(
        id=uuid.uuid4(),
        ticket_id=ticket.id,
        author_kind=author_kind,
        author=author,
        internal=internal,
        body=body,
        created_at=now,
    )


# ---- the user's side ------------------------------------------------------------------------


async def own_ticket(session: AsyncSession, user_id: uuid.UUID, ticket_id: uuid.UUID, *, lock: bool = False) -> Ticket:
    ticket = await repo.get(session, ticket_id, for_update=lock)
    if ticket is None or ticket.user_id != user_id:
        raise TicketNotFound(f"You have no ticket {ticket_id}")
    return ticket


async def user_tickets(session: AsyncSession, user_id: uuid.UUID, *, limit: int, before: str | None) -> Page:
    return await search(session, repo.TicketFilter(user_id=user_id), limit=limit, before=before)


async def user_reply(
    session: AsyncSession, runtime: Runtime, user_id: uuid.UUID, ticket_id: uuid.UUID, text: str
) -> TicketEntry:
    ticket = await own_ticket(session, user_id, ticket_id, lock=True)
    now = now_utc()
    await _transition(session, runtime, ticket, Action.USER_REPLY, Actor.USER, "user", now)
    entry = _entry(ticket, "user", str(user_id), text, now, internal=False)
    repo.add_entry(session, entry)
    return entry


async def user_action(
    session: AsyncSession, runtime: Runtime, user_id: uuid.UUID, ticket_id: uuid.UUID, action: Action
) -> Ticket:
    ticket = await own_ticket(session, user_id, ticket_id, lock=True)
    await _transition(session, runtime, ticket, action, Actor.USER, "user", now_utc())
    return ticket


# ---- staff ----------------------------------------------------------------------------------


async def staff_ticket(session: AsyncSession, ticket_id: uuid.UUID, *, lock: bool = False) -> Ticket:
    ticket = await repo.get(session, ticket_id, for_update=lock)
    if ticket is None:
        raise TicketNotFound(f"No ticket {ticket_id}")
    return ticket


async def search(session: AsyncSession, flt: repo.TicketFilter, *, limit: int, before: str | None) -> Page:
    cursor = decode_cursor(before) if before else None
    rows = await repo.search(session, flt, limit=limit + 1, before=cursor)
    items = rows[:limit]
    next_before = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return Page(items=items, next_before=next_before)


async def assign(session: AsyncSession, runtime: Runtime, ticket_id: uuid.UUID, assignee: str, by: str) -> Ticket:
    ticket = await staff_ticket(session, ticket_id, lock=True)
    now = now_utc()
    await _transition(session, runtime, ticket, Action.ASSIGN, Actor.STAFF, by, now)
    ticket.assignee = assignee
    repo.add_entry(session, _entry(ticket, "system", by, f"assigned to {assignee}", now, internal=True))
    return ticket


async def staff_reply(
    session: AsyncSession, runtime: Runtime, ticket_id: uuid.UUID, text: str, by: str, *, wait_for_user: bool
) -> TicketEntry:
    """A reply both sides see; it also lands in the user's inbox (and is pushed to the phone)."""
    ticket = await staff_ticket(session, ticket_id, lock=True)
    now = now_utc()
    await _transition(
        session, runtime, ticket, Action.ASK_USER if wait_for_user else Action.STAFF_REPLY, Actor.STAFF, by, now
    )
    if ticket.assignee is None:
        ticket.assignee = by
    entry = _entry(ticket, "staff", by, text, now, internal=False)
    repo.add_entry(session, entry)
    await inbox.deliver(
        session,
        ticket.user_id,
        texts.ticket_reply(ReportKind(ticket.kind), text),
        source_event_id=entry.id,
        pushes=context_of(runtime).pushes,
    )
    return entry


async def add_note(session: AsyncSession, ticket_id: uuid.UUID, text: str, by: str) -> TicketEntry:
    ticket = await staff_ticket(session, ticket_id)
    entry = _entry(ticket, "staff", by, text, now_utc(), internal=True)
    repo.add_entry(session, entry)
    return entry


async def staff_action(
    session: AsyncSession, runtime: Runtime, ticket_id: uuid.UUID, action: Action, by: str
) -> Ticket:
    ticket = await staff_ticket(session, ticket_id, lock=True)
    await _transition(session, runtime, ticket, action, Actor.STAFF, by, now_utc())
    return ticket


async def set_priority(session: AsyncSession, ticket_id: uuid.UUID, priority: TicketPriority, by: str) -> Ticket:
    """A new priority restarts nothing: the deadline is the (re)opening time plus the new window."""
    ticket = await staff_ticket(session, ticket_id, lock=True)
    now = now_utc()
    started = ticket.sla_due_at - SLA[TicketPriority(ticket.priority)]
    ticket.priority = priority.value
    ticket.sla_due_at = started + SLA[priority]
    if ticket.sla_due_at > now:
        ticket.overdue_alerted_at = None
    ticket.updated_at = now
    repo.add_entry(session, _entry(ticket, "system", by, f"priority set to {priority.value}", now, internal=True))
    return ticket


async def entries_of(session: AsyncSession, ticket: Ticket, *, include_internal: bool) -> list[TicketEntry]:
    return await repo.entries(session, ticket.id, include_internal=include_internal)


# ---- periodic and consumed ------------------------------------------------------------------


async def alert_overdue(session: AsyncSession, runtime: Runtime, *, limit: int = 500) -> datetime | None:
    """Raise one `notify.ticket.overdue` per open ticket past its deadline; returns the next deadline."""
    now = now_utc()
    for ticket in await repo.claim_overdue(session, now, limit):
        ticket.overdue_alerted_at = now
        await runtime.publish(
            session,
            TicketOverdue(
                ticket_id=ticket.id,
                priority=TicketPriority(ticket.priority),
                status=TicketStatus(ticket.status),
                sla_due_at=ticket.sla_due_at,
                assignee=ticket.assignee,
                at=now,
            ),
            key=str(ticket.id),
        )
        log.warning("ticket overdue", extra={"ticket_id": str(ticket.id), "priority": ticket.priority})
    await session.flush()
    return await repo.next_sla_deadline(session)


async def note_fault_cleared(session: AsyncSession, event_id: uuid.UUID, data: BankFaultCleared) -> int:
    """device-svc cleared a bank users reported: a line on each of their tickets (once per event)."""
    added = 0
    tickets: Sequence[uuid.UUID] = await repo.existing_ids(session, data.ticket_ids) if data.ticket_ids else []
    for ticket_id in tickets:
        body = f"Power bank {data.bank_id} was inspected by staff and cleared for lending."
        if await repo.add_entry_once(
            session,
            id=uuid.uuid5(event_id, str(ticket_id)),
            ticket_id=ticket_id,
            author_kind="system",
            author=data.by,
            internal=False,
            body=body,
            created_at=data.at,
        ):
            added += 1
    return added


# ---- disputes (billing-svc holds them; the queue shows them) ---------------------------------


async def open_for(
    session: AsyncSession,
    runtime: Runtime,
    *,
    user_id: uuid.UUID,
    kind: ReportKind,
    description: str,
    at: datetime,
    rental_id: uuid.UUID | None = None,
    dispute_id: uuid.UUID | None = None,
) -> Ticket:
    """A ticket opened by the service for the user (a dispute, a call-back request), not by a report."""
    priority = DEFAULT_PRIORITY[kind]
    now = now_utc()
    ticket = Ticket(
        id=uuid.uuid4(),
        user_id=user_id,
        kind=kind.value,
        status=TicketStatus.NEW.value,
        priority=priority.value,
        description=description,
        rental_id=rental_id,
        dispute_id=dispute_id,
        created_at=at,
        updated_at=now,
        sla_due_at=at + SLA[priority],
    )
    repo.add(session, ticket)
    await runtime.publish(
        session,
        TicketOpened(
            ticket_id=ticket.id,
            user_id=user_id,
            kind=kind,
            priority=priority,
            sla_due_at=ticket.sla_due_at,
            rental_id=rental_id,
            at=now,
        ),
        key=str(ticket.id),
    )
    log.info("ticket opened", extra={"ticket_id": str(ticket.id), "kind": kind.value})
    return ticket


def add_system_line(session: AsyncSession, ticket: Ticket, body: str, by: str) -> None:
    """A line both sides see (an outcome from another system: billing, the telephony provider)."""
    now = now_utc()
    ticket.updated_at = now
    repo.add_entry(session, _entry(ticket, "system", by, body, now, internal=False))


async def open_for_dispute(session: AsyncSession, runtime: Runtime, data: DisputeOpened) -> Ticket | None:
    """A ticket of kind `dispute` linked to the rental; None when this dispute has one already."""
    if await repo.by_dispute(session, data.dispute_id) is not None:
        return None
    return await open_for(
        session,
        runtime,
        user_id=data.user_id,
        kind=ReportKind.DISPUTE,
        description=data.reason,
        at=data.at,
        rental_id=data.rental_id,
        dispute_id=data.dispute_id,
    )


async def dispute_resolved(session: AsyncSession, runtime: Runtime, data: DisputeResolved) -> Ticket | None:
    """Billing settled the dispute: a line on its ticket both sides see, and the ticket resolved if open."""
    ticket = await repo.by_dispute(session, data.dispute_id)
    if ticket is None:  # opened before this service kept disputes: nothing to record it on
        return None
    now = now_utc()
    outcome = "rejected" if data.outcome == "rejected" else "corrected (the rental was ended or its fee lowered)"
    body = f"Billing {outcome} this dispute." + (f" {data.note}" if data.note else "")
    repo.add_entry(session, _entry(ticket, "system", data.by, body, now, internal=False))
    if TicketStatus(ticket.status) in lifecycle.OPEN:
        await _transition(session, runtime, ticket, Action.RESOLVE, Actor.STAFF, data.by, now)
    return ticket


# ---- photos on reports ----------------------------------------------------------------------


class TicketNotOpen(BusinessError):
    status = 409
    code = "ticket_not_open"
    title = "Photos can be added to an open ticket only"


async def add_photo(
    session: AsyncSession, user_id: uuid.UUID, ticket_id: uuid.UUID, data: bytes, *, max_photos: int
) -> TicketPhoto:
    """A photo of the user's own open ticket, typed by its bytes (as notice images)."""
    ticket = await own_ticket(session, user_id, ticket_id, lock=True)
    if TicketStatus(ticket.status) not in lifecycle.OPEN:
        raise TicketNotOpen(f"The ticket is {ticket.status}", ticket_status=ticket.status)
    count = await repo.photo_count(session, ticket.id)
    if count >= max_photos:
        raise TooManyImages(f"A report has at most {max_photos} photos", max_images=max_photos)
    content_type = sniff(data)
    if content_type is None:
        raise NotAnImage(f"Send the photo's bytes: one of {', '.join(sorted(ALLOWED_TYPES))}")
    now = now_utc()
    photo = TicketPhoto(
        id=uuid.uuid4(),
        ticket_id=ticket.id,
        position=count,
        content_type=content_type,
        size=len(data),
        data=data,
        created_at=now,
    )
    session.add(photo)
    ticket.updated_at = now
    await session.flush()
    return photo
