"""Operations SQL. Never commits."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import Bank, BankTransition, Cabinet, Slot

ALARM_COLUMNS = {
    "moved_while_idle": "moved_alarm_at",
    "high_temperature": "high_temp_alarm_at",
    "position_overdue": "position_overdue_at",
    "maintenance_due": "maintenance_due_at",
}


async def banks_with_alarms(session: AsyncSession, limit: int) -> Sequence[Bank]:
    stmt = (
        select(Bank)
        .where(
            or_(
                Bank.moved_alarm_at.is_not(None),
                Bank.high_temp_alarm_at.is_not(None),
                Bank.position_overdue_at.is_not(None),
                Bank.maintenance_due_at.is_not(None),
                Bank.has_module.is_(True) & Bank.online.is_(False) & (Bank.state != "retired"),
            )
        )
        .order_by(Bank.id)
        .limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()


async def offline_cabinets(session: AsyncSession, limit: int) -> Sequence[Cabinet]:
    stmt = (
        select(Cabinet).where(Cabinet.online.is_(False), Cabinet.state != "retired").order_by(Cabinet.id).limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()


async def device_statuses(session: AsyncSession, kind: str | None, online: bool | None, limit: int) -> list[Any]:
    rows: list[Any] = []
    if kind in (None, "cabinet"):
        stmt = select(Cabinet).order_by(Cabinet.id).limit(limit)
        if online is not None:
            stmt = stmt.where(Cabinet.online.is_(online))
        rows += [("cabinet", c) for c in (await session.execute(stmt)).scalars().all()]
    if kind in (None, "bank"):
        bstmt = select(Bank).where(Bank.has_module.is_(True)).order_by(Bank.id).limit(limit)
        if online is not None:
            bstmt = bstmt.where(Bank.online.is_(online))
        rows += [("bank", b) for b in (await session.execute(bstmt)).scalars().all()]
    return rows[:limit]


async def cabinet_presence(
    session: AsyncSession, heard_since: datetime | None, silent_limit: int
) -> tuple[Any, list[str]]:
    """(total, online, heard from since `heard_since` while online) and the first cabinets not counted
    as heard (by id): one scan, however large the fleet."""
    heard: ColumnElement[bool] = Cabinet.online.is_(True)
    if heard_since is not None:
        heard = and_(heard, Cabinet.last_seen_at > heard_since)
    counts = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(Cabinet.online.is_(True)),
                func.count().filter(heard),
            ).where(Cabinet.state != "retired")
        )
    ).one()
    silent = (
        await session.execute(
            select(Cabinet.id).where(Cabinet.state != "retired", ~heard).order_by(Cabinet.id).limit(silent_limit)
        )
    ).scalars()
    return counts, list(silent)


async def query_banks(
    session: AsyncSession,
    *,
    state: str | None,
    maintenance_due: bool | None,
    has_module: bool | None,
    cabinet_id: str | None,
    limit: int,
    offset: int,
    after: str | None = None,
    q: str | None = None,
    bank_id: str | None = None,
) -> Sequence[Any]:
    rentals = (
        select(func.count())
        .select_from(BankTransition)
        .where(BankTransition.bank_id == Bank.id, BankTransition.to_state == "rented")
        .correlate(Bank)
        .scalar_subquery()
    )
    stmt = select(Bank, rentals.label("rentals")).order_by(Bank.id).limit(limit).offset(offset)
    if state is not None:
        stmt = stmt.where(Bank.state == state)
    if maintenance_due is not None:
        stmt = stmt.where(
            Bank.maintenance_due_at.is_not(None) if maintenance_due else Bank.maintenance_due_at.is_(None)
        )
    if has_module is not None:
        stmt = stmt.where(Bank.has_module.is_(has_module))
    if cabinet_id is not None:
        stmt = stmt.where(Bank.cabinet_id == cabinet_id)
    if after is not None:  # keyset paging along the primary key: as cheap on page 100 as on page 1
        stmt = stmt.where(Bank.id > after)
    if q:  # an id prefix, or a code printed on or read from the bank
        stmt = stmt.where(
            or_(Bank.id.startswith(q, autoescape=True), Bank.qr_code == q, Bank.nfc_uid == q, Bank.ble_mac == q)
        )
    if bank_id is not None:
        stmt = stmt.where(Bank.id == bank_id)
    return (await session.execute(stmt)).all()


async def transitions(
    session: AsyncSession, bank_id: str, limit: int, *, newest_first: bool = False
) -> Sequence[BankTransition]:
    order = (
        (BankTransition.at.desc(), BankTransition.id.desc()) if newest_first else (BankTransition.at, BankTransition.id)
    )
    stmt = select(BankTransition).where(BankTransition.bank_id == bank_id).order_by(*order).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def set_transition_reason(session: AsyncSession, reason: str) -> None:
    """The reason the banks trigger records for state changes in this transaction."""
    await session.execute(text("SELECT set_config('pb.transition_reason', :r, true)"), {"r": reason[:100]})


async def faulty_slots(session: AsyncSession, limit: int) -> Sequence[Any]:
    stmt = (
        select(Slot, Cabinet.lat, Cabinet.lon)
        .join(Cabinet, Cabinet.id == Slot.cabinet_id)
        .where(Slot.fault.is_not(None))
        .order_by(Slot.cabinet_id, Slot.slot_no)
        .limit(limit)
    )
    return (await session.execute(stmt)).all()


async def banks_needing_work(session: AsyncSession, limit: int) -> Sequence[Bank]:
    stmt = (
        select(Bank)
        .where(or_(Bank.state.in_(("faulty", "maintenance", "lost")), Bank.maintenance_due_at.is_not(None)))
        .order_by(Bank.id)
        .limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()
