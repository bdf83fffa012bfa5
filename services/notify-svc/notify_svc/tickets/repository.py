"""All SQL of tickets and their threads. Never commits."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import Ticket, TicketEntry, TicketPhoto

OVERDUE_STATUSES = ("new", "assigned", "reopened")  # the next step is support's


@dataclass(frozen=True)
class TicketFilter:
    status: Sequence[str] = ()
    kind: str | None = None
    priority: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    overdue_at: datetime | None = None  # only tickets overdue at this instant
    user_id: uuid.UUID | None = None
    bank_id: str | None = None
    text: str | None = None


def add(session: AsyncSession, ticket: Ticket) -> None:
    session.add(ticket)


def add_entry(session: AsyncSession, entry: TicketEntry) -> None:
    session.add(entry)


async def add_entry_once(session: AsyncSession, **values: object) -> bool:
    """Insert a thread line whose id is derived from its cause; False when it is already there."""
    stmt = insert(TicketEntry).values(**values).on_conflict_do_nothing(index_elements=[TicketEntry.id])
    return bool((await session.execute(stmt.returning(TicketEntry.id))).first())


async def get(session: AsyncSession, ticket_id: uuid.UUID, *, for_update: bool = False) -> Ticket | None:
    stmt = select(Ticket).where(Ticket.id == ticket_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def existing_ids(session: AsyncSession, ticket_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    return list((await session.scalars(select(Ticket.id).where(Ticket.id.in_(ticket_ids)))).all())


async def entries(session: AsyncSession, ticket_id: uuid.UUID, *, include_internal: bool) -> list[TicketEntry]:
    stmt = select(TicketEntry).where(TicketEntry.ticket_id == ticket_id)
    if not include_internal:
        stmt = stmt.where(TicketEntry.internal.is_(False))
    stmt = stmt.order_by(TicketEntry.created_at, TicketEntry.id)
    return list((await session.scalars(stmt)).all())


async def opened_since(session: AsyncSession, user_id: uuid.UUID, since: datetime) -> int:
    stmt = select(func.count()).select_from(Ticket).where(Ticket.user_id == user_id, Ticket.created_at >= since)
    return int((await session.execute(stmt)).scalar_one())


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(
    session: AsyncSession, flt: TicketFilter, *, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[Ticket]:
    stmt = select(Ticket)
    if flt.user_id is not None:
        stmt = stmt.where(Ticket.user_id == flt.user_id)
    if flt.status:
        stmt = stmt.where(Ticket.status.in_(list(flt.status)))
    if flt.kind is not None:
        stmt = stmt.where(Ticket.kind == flt.kind)
    if flt.priority is not None:
        stmt = stmt.where(Ticket.priority == flt.priority)
    if flt.assignee is not None:
        stmt = stmt.where(Ticket.assignee == flt.assignee)
    if flt.unassigned:
        stmt = stmt.where(Ticket.assignee.is_(None))
    if flt.overdue_at is not None:
        stmt = stmt.where(Ticket.status.in_(OVERDUE_STATUSES), Ticket.sla_due_at <= flt.overdue_at)
    if flt.bank_id is not None:
        stmt = stmt.where(Ticket.bank_id == flt.bank_id)
    if flt.text:
        stmt = stmt.where(Ticket.description.ilike(f"%{_escape_like(flt.text)}%", escape="\\"))
    if before is not None:
        stmt = stmt.where(tuple_(Ticket.created_at, Ticket.id) < tuple_(*before))
    stmt = stmt.order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def claim_overdue(session: AsyncSession, now: datetime, limit: int) -> list[Ticket]:
    """Open tickets past their SLA deadline not alerted yet, locked so that another replica skips them."""
    stmt = (
        select(Ticket)
        .where(
            Ticket.status.in_(OVERDUE_STATUSES),
            Ticket.sla_due_at <= now,
            Ticket.overdue_alerted_at.is_(None),
        )
        .order_by(Ticket.sla_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.scalars(stmt)).all())


async def next_sla_deadline(session: AsyncSession) -> datetime | None:
    stmt = select(func.min(Ticket.sla_due_at)).where(
        Ticket.status.in_(OVERDUE_STATUSES), Ticket.overdue_alerted_at.is_(None)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_dispute(session: AsyncSession, dispute_id: uuid.UUID) -> Ticket | None:
    stmt = select(Ticket).where(Ticket.dispute_id == dispute_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def photo_count(session: AsyncSession, ticket_id: uuid.UUID) -> int:
    stmt = select(func.count()).select_from(TicketPhoto).where(TicketPhoto.ticket_id == ticket_id)
    return int((await session.execute(stmt)).scalar_one())


async def photos_of(session: AsyncSession, ticket_id: uuid.UUID) -> list[tuple[uuid.UUID, str, int]]:
    """(photo id, content type, size) in upload order; the bytes are not read."""
    stmt = (
        select(TicketPhoto.id, TicketPhoto.content_type, TicketPhoto.size)
        .where(TicketPhoto.ticket_id == ticket_id)
        .order_by(TicketPhoto.position)
    )
    return [(i, t, n) for i, t, n in (await session.execute(stmt)).all()]


async def photo(session: AsyncSession, photo_id: uuid.UUID) -> TicketPhoto | None:
    return (await session.execute(select(TicketPhoto).where(TicketPhoto.id == photo_id))).scalar_one_or_none()
