"""All registry SQL: cabinets, slots and banks. Never commits."""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from device_svc.models import Bank, Cabinet, Command, Slot


async def get_cabinet(session: AsyncSession, cabinet_id: str, *, for_update: bool = False) -> Cabinet | None:
    stmt = select(Cabinet).where(Cabinet.id == cabinet_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def cabinet_online(session: AsyncSession, cabinet_id: str) -> bool | None:
    """Whether a cabinet (not retired) is shown online; None when there is no such cabinet."""
    stmt = select(Cabinet.online).where(Cabinet.id == cabinet_id, Cabinet.state != "retired")
    return (await session.execute(stmt)).scalar_one_or_none()


async def advance_inventory_at(session: AsyncSession, cabinet_id: str, reported_at: datetime) -> bool:
    """Record `reported_at` as the cabinet's newest slot snapshot if it is newer than the stored one
    (compared in the UPDATE, so concurrent writers agree). False: an older snapshot."""
    stmt = (
        update(Cabinet)
        .where(Cabinet.id == cabinet_id, or_(Cabinet.inventory_at.is_(None), Cabinet.inventory_at < reported_at))
        .values(inventory_at=reported_at)
        .returning(Cabinet.id)
    )
    result = await session.execute(stmt, execution_options={"synchronize_session": False})
    return result.first() is not None


async def get_bank(session: AsyncSession, bank_id: str, *, for_update: bool = False) -> Bank | None:
    stmt = select(Bank).where(Bank.id == bank_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_bank_by_identity(session: AsyncSession, code: str, *, for_update: bool = False) -> Bank | None:
    """The bank whose QR code, NFC tag id or Bluetooth address is `code`."""
    stmt = select(Bank).where(or_(Bank.qr_code == code, Bank.nfc_uid == code, Bank.ble_mac == code)).limit(1)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_slot(session: AsyncSession, cabinet_id: str, slot_no: int) -> Slot | None:
    return await session.get(Slot, (cabinet_id, slot_no))


async def list_slots(session: AsyncSession, cabinet_id: str) -> Sequence[Slot]:
    stmt = select(Slot).where(Slot.cabinet_id == cabinet_id).order_by(Slot.slot_no)
    return (await session.execute(stmt)).scalars().all()


async def banks_for_update(session: AsyncSession, cabinet_id: str, bank_ids: Iterable[str]) -> dict[str, Bank]:
    """Banks named in a report plus the banks the registry has in that cabinet, locked."""
    ids = list(bank_ids)
    stmt = select(Bank).where(or_(Bank.id.in_(ids), Bank.cabinet_id == cabinet_id)).order_by(Bank.id).with_for_update()
    return {b.id: b for b in (await session.execute(stmt)).scalars().all()}


async def clear_slots(
    session: AsyncSession, *, bank_ids: Sequence[str], cabinet_id: str, slot_nos: Sequence[int]
) -> None:
    """Empty every slot holding one of `bank_ids` and the given slots of `cabinet_id`."""
    conditions: list[ColumnElement[bool]] = []
    if bank_ids:
        conditions.append(Slot.bank_id.in_(bank_ids))
    if slot_nos:
        conditions.append(and_(Slot.cabinet_id == cabinet_id, Slot.slot_no.in_(slot_nos)))
    if conditions:
        await session.execute(
            update(Slot).where(or_(*conditions)).values(bank_id=None, updated_at=func.now()),
            execution_options={"synchronize_session": False},
        )


async def upsert_slots(session: AsyncSession, cabinet_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """rows: {"slot_no", "bank_id", "fault"}."""
    if not rows:
        return
    stmt = insert(Slot).values([{"cabinet_id": cabinet_id, **row} for row in rows])
    stmt = stmt.on_conflict_do_update(
        index_elements=[Slot.cabinet_id, Slot.slot_no],
        set_={"bank_id": stmt.excluded.bank_id, "fault": stmt.excluded.fault, "updated_at": func.now()},
    )
    await session.execute(stmt)


async def empty_slot_of_bank(session: AsyncSession, bank_id: str) -> None:
    await session.execute(
        update(Slot).where(Slot.bank_id == bank_id).values(bank_id=None, updated_at=func.now()),
        execution_options={"synchronize_session": False},
    )


async def has_pending_command(session: AsyncSession, bank_id: str) -> bool:
    stmt = select(Command.cmd_id).where(Command.bank_id == bank_id, Command.status == "sent").limit(1)
    return (await session.execute(stmt)).first() is not None


def available_banks_subquery(min_battery_pct: int) -> Any:
    return (
        select(func.count())
        .select_from(Bank)
        .join(Slot, and_(Slot.bank_id == Bank.id, Slot.cabinet_id == Bank.cabinet_id))
        .where(
            Bank.cabinet_id == Cabinet.id,
            Bank.state == "in_cabinet",
            Bank.battery_pct >= min_battery_pct,
            Bank.reported_fault_at.is_(None),
            Slot.fault.is_(None),
        )
        .correlate(Cabinet)
        .scalar_subquery()
    )


def occupied_slots_subquery() -> Any:
    return (
        select(func.count())
        .select_from(Slot)
        .where(Slot.cabinet_id == Cabinet.id, Slot.bank_id.is_not(None))
        .correlate(Cabinet)
        .scalar_subquery()
    )


async def list_cabinets(session: AsyncSession, min_battery_pct: int, after: str | None, limit: int) -> Sequence[Any]:
    stmt = (
        select(
            Cabinet,
            available_banks_subquery(min_battery_pct).label("banks_available"),
            occupied_slots_subquery().label("occupied"),
        )
        .order_by(Cabinet.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Cabinet.id > after)
    return (await session.execute(stmt)).all()


async def cabinet_summary(session: AsyncSession, cabinet_id: str, min_battery_pct: int) -> Any | None:
    stmt = select(
        Cabinet,
        available_banks_subquery(min_battery_pct).label("banks_available"),
        occupied_slots_subquery().label("occupied"),
    ).where(Cabinet.id == cabinet_id)
    return (await session.execute(stmt)).first()


async def slot_details(session: AsyncSession, cabinet_id: str) -> Sequence[Any]:
    stmt = (
        select(Slot, Bank)
        .outerjoin(Bank, Bank.id == Slot.bank_id)
        .where(Slot.cabinet_id == cabinet_id)
        .order_by(Slot.slot_no)
    )
    return (await session.execute(stmt)).all()


async def take_offline(session: AsyncSession, device_id: str) -> tuple[str, Any] | None:
    """Show a device offline now: ("cabinet" | "bank", row with last_seen_at and rssi_dbm), or None
    when it was not shown online."""
    for kind, model in (("cabinet", Cabinet), ("bank", Bank)):
        stmt = (
            update(model)
            .where(model.id == device_id, model.online.is_(True))
            .values(online=False)
            .returning(model.last_seen_at, model.rssi_dbm)
        )
        row = (await session.execute(stmt, execution_options={"synchronize_session": False})).first()
        if row is not None:
            return kind, row
    return None


STALE_BATCH = 500  # cabinets marked offline per transaction


async def mark_stale_cabinets_offline(
    session: AsyncSession,
    seen_before: datetime,
    limit: int = STALE_BATCH,
    seen_before_by_protocol: Mapping[str, datetime] | None = None,
) -> Sequence[Any]:
    """Online cabinets silent since `seen_before` (or, for a protocol with a slower heartbeat, since its own
    moment) are marked offline."""
    by_protocol = dict(seen_before_by_protocol or {})
    silent = [and_(Cabinet.protocol == p, Cabinet.last_seen_at < before) for p, before in by_protocol.items()]
    silent.append(and_(Cabinet.protocol.not_in(list(by_protocol)), Cabinet.last_seen_at < seen_before))
    locked = (
        select(Cabinet.id)
        .where(Cabinet.online.is_(True), or_(Cabinet.last_seen_at.is_(None), *silent))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Cabinet)
        .where(Cabinet.id.in_(locked.scalar_subquery()))
        .values(online=False)
        .returning(Cabinet.id, Cabinet.last_seen_at, Cabinet.rssi_dbm)
    )
    return (await session.execute(stmt, execution_options={"synchronize_session": False})).all()


async def oldest_online_cabinet_seen_at(session: AsyncSession) -> dict[str, datetime]:
    """Per protocol, the oldest last message of an online cabinet."""
    rows = await session.execute(
        select(Cabinet.protocol, func.min(Cabinet.last_seen_at))
        .where(Cabinet.online.is_(True), Cabinet.last_seen_at.is_not(None))
        .group_by(Cabinet.protocol)
    )
    return {protocol: oldest for protocol, oldest in rows.all() if oldest is not None}


async def mark_stale_banks_offline(session: AsyncSession, seen_before: datetime, limit: int = 1000) -> Sequence[Any]:
    locked = (
        select(Bank.id)
        .where(Bank.online.is_(True), or_(Bank.last_seen_at.is_(None), Bank.last_seen_at < seen_before))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Bank)
        .where(Bank.id.in_(locked.scalar_subquery()))
        .values(online=False)
        .returning(Bank.id, Bank.last_seen_at, Bank.rssi_dbm)
    )
    result = await session.execute(stmt, execution_options={"synchronize_session": False})
    return result.all()


async def flag_overdue_positions(
    session: AsyncSession, positioned_before: datetime, now: datetime, limit: int = 1000
) -> list[tuple[str, datetime | None]]:
    """Idle banks with a module whose last position (or, if later, their last state change: a bank
    just returned starts a fresh period) is older than `positioned_before` and not yet flagged."""
    since = func.greatest(func.coalesce(Bank.position_at, Bank.state_changed_at), Bank.state_changed_at)
    locked = (
        select(Bank.id)
        .where(
            Bank.has_module.is_(True),
            Bank.state.not_in(("rented", "retired")),
            Bank.position_overdue_at.is_(None),
            since < positioned_before,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Bank)
        .where(Bank.id.in_(locked.scalar_subquery()))
        .values(position_overdue_at=now)
        .returning(Bank.id, Bank.position_at)
    )
    result = await session.execute(stmt, execution_options={"synchronize_session": False})
    return [(row[0], row[1]) for row in result.all()]
