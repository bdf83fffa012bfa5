"""SQL of users' fault reports about banks. Never commits."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import Bank, BankFaultReport


async def add_report(
    session: AsyncSession,
    *,
    ticket_id: uuid.UUID,
    bank_id: str,
    kind: str,
    user_id: uuid.UUID,
    cabinet_id: str | None,
    at: datetime,
) -> bool:
    """Record a report once per ticket; False when it is already recorded."""
    stmt = (
        insert(BankFaultReport)
        .values(ticket_id=ticket_id, bank_id=bank_id, kind=kind, user_id=user_id, cabinet_id=cabinet_id, reported_at=at)
        .on_conflict_do_nothing(index_elements=[BankFaultReport.ticket_id])
        .returning(BankFaultReport.ticket_id)
    )
    return (await session.execute(stmt)).first() is not None


async def hold_bank(session: AsyncSession, bank_id: str, at: datetime) -> bool:
    """Mark the bank as reported (keeping the first report's time); False when no such bank."""
    stmt = (
        update(Bank)
        .where(Bank.id == bank_id)
        .values(reported_fault_at=func.coalesce(Bank.reported_fault_at, at))
        .returning(Bank.id)
    )
    return (await session.execute(stmt, execution_options={"synchronize_session": False})).first() is not None


async def clear(session: AsyncSession, bank_id: str, by: str, note: str, at: datetime) -> list[uuid.UUID]:
    """Close every open report about the bank and release it; the tickets they came from."""
    closed = await session.execute(
        update(BankFaultReport)
        .where(BankFaultReport.bank_id == bank_id, BankFaultReport.cleared_at.is_(None))
        .values(cleared_at=at, cleared_by=by, note=note)
        .returning(BankFaultReport.ticket_id),
        execution_options={"synchronize_session": False},
    )
    tickets = list(closed.scalars().all())
    await session.execute(
        update(Bank).where(Bank.id == bank_id).values(reported_fault_at=None),
        execution_options={"synchronize_session": False},
    )
    return tickets


async def open_reports(session: AsyncSession, bank_id: str | None, limit: int) -> Sequence[BankFaultReport]:
    stmt = select(BankFaultReport).where(BankFaultReport.cleared_at.is_(None))
    if bank_id is not None:
        stmt = stmt.where(BankFaultReport.bank_id == bank_id)
    stmt = stmt.order_by(BankFaultReport.reported_at, BankFaultReport.ticket_id).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def reported_banks(session: AsyncSession, limit: int) -> Sequence[Bank]:
    stmt = select(Bank).where(Bank.reported_fault_at.is_not(None)).order_by(Bank.reported_fault_at).limit(limit)
    return (await session.execute(stmt)).scalars().all()
