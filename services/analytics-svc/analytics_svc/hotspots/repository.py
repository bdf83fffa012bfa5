"""SQL of hotspots. Never commits."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.hotspots.rules import CabinetStock
from analytics_svc.models import CabinetRegion, HotspotAlert, RefusalFact, RentalFact
from contracts.regions import code_prefix

# One evaluation at a time across replicas (a transaction-scoped advisory lock; others skip their turn).
_LOCK_KEY = 0x486F7473  # "Hots"


async def try_lock(session: AsyncSession) -> bool:
    return bool(await session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY}))


async def cabinet_stock(session: AsyncSession, region: str | None = None) -> list[CabinetStock]:
    """Each cabinet's newest stock report, in the cell its newest region fact puts it."""
    stmt = select(
        CabinetRegion.cabinet_id,
        CabinetRegion.cell,
        CabinetRegion.division,
        func.coalesce(CabinetRegion.banks_rentable, CabinetRegion.banks_present, 0),
        func.coalesce(CabinetRegion.banks_present, 0),
        func.coalesce(CabinetRegion.slot_count, 0),
    ).where(CabinetRegion.cell.is_not(None), CabinetRegion.stock_at.is_not(None))
    if region is not None:
        stmt = stmt.where(CabinetRegion.division.startswith(code_prefix(region)))
    rows = (await session.execute(stmt)).all()
    return [
        CabinetStock(
            cabinet_id=cid, cell=cell or "", division=division, rentable=rentable, present=present, slots=slots
        )
        for cid, cell, division, rentable, present, slots in rows
    ]


async def borrows_per_cell(session: AsyncSession, since: datetime, until: datetime) -> dict[str, int]:
    stmt = (
        select(RentalFact.start_cell, func.count())
        .where(RentalFact.started_at > since, RentalFact.started_at <= until, RentalFact.start_cell.is_not(None))
        .group_by(RentalFact.start_cell)
    )
    return {cell: n for cell, n in (await session.execute(stmt)).all() if cell is not None}


async def refused_per_cell(session: AsyncSession, since: datetime, until: datetime) -> dict[str, int]:
    stmt = (
        select(CabinetRegion.cell, func.count())
        .select_from(RefusalFact)
        .join(CabinetRegion, CabinetRegion.cabinet_id == RefusalFact.cabinet_id)
        .where(RefusalFact.at > since, RefusalFact.at <= until, CabinetRegion.cell.is_not(None))
        .group_by(CabinetRegion.cell)
    )
    return {cell: n for cell, n in (await session.execute(stmt)).all() if cell is not None}


async def open_alerts(session: AsyncSession) -> Sequence[HotspotAlert]:
    return (await session.execute(select(HotspotAlert).where(HotspotAlert.cleared_at.is_(None)))).scalars().all()


async def raise_alert(session: AsyncSession, values: dict[str, Any]) -> uuid.UUID | None:
    """Insert an open alert unless one for the cell and kind is open; its id, or None."""
    stmt = (
        insert(HotspotAlert)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["cell", "kind"], index_where=HotspotAlert.cleared_at.is_(None))
        .returning(HotspotAlert.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def clear_alert(session: AsyncSession, alert_id: uuid.UUID, at: datetime) -> bool:
    stmt = (
        update(HotspotAlert)
        .where(HotspotAlert.id == alert_id, HotspotAlert.cleared_at.is_(None))
        .values(cleared_at=at, evaluated_at=at)
        .returning(HotspotAlert.id)
    )
    return (await session.execute(stmt, execution_options={"synchronize_session": False})).first() is not None


async def alerts(session: AsyncSession, *, open_only: bool, region: str | None, limit: int) -> Sequence[HotspotAlert]:
    stmt = select(HotspotAlert)
    if open_only:
        stmt = stmt.where(HotspotAlert.cleared_at.is_(None))
    if region is not None:
        stmt = stmt.where(HotspotAlert.division.startswith(code_prefix(region)))
    stmt = stmt.order_by(HotspotAlert.raised_at.desc(), HotspotAlert.cell, HotspotAlert.kind).limit(limit)
    return (await session.execute(stmt)).scalars().all()
