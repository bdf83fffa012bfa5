"""All SQL of the statistics. Never commits."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.models import RentalFact, UserFact
from analytics_svc.stats.bucketing import SLOT

_ORIGIN = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


@dataclass(frozen=True)
class Overview:
    users_registered: int
    rentals_started: int
    rentals_ended: int
    revenue_fen: int
    active_rentals: int
    # Since a moment (the start of an operator's day): rentals started, and fees of rentals ended.
    rentals_started_since: int | None = None
    revenue_since_fen: int | None = None


async def rentals_per_slot(session: AsyncSession, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """Rentals started in [start, end), counted per 15-minute UTC slot."""
    slot = func.date_bin(literal(SLOT), RentalFact.started_at, literal(_ORIGIN)).label("slot")
    stmt = select(slot, func.count()).where(RentalFact.started_at >= start, RentalFact.started_at < end).group_by(slot)
    return [(row[0], int(row[1])) for row in (await session.execute(stmt)).all()]


async def overview(session: AsyncSession, since: datetime | None = None) -> Overview:
    users = select(func.count()).select_from(UserFact).where(UserFact.registered_at.is_not(None)).scalar_subquery()
    moment = since or _ORIGIN
    stmt = select(
        users,
        func.count(),
        func.count(RentalFact.ended_at),
        func.coalesce(func.sum(RentalFact.fee_fen), 0),
        func.count().filter(RentalFact.ended_at.is_(None)),
        func.count().filter(RentalFact.started_at >= moment),
        func.coalesce(func.sum(RentalFact.fee_fen).filter(RentalFact.ended_at >= moment), 0),
    ).select_from(RentalFact)
    row = (await session.execute(stmt)).one()
    return Overview(
        users_registered=int(row[0]),
        rentals_started=int(row[1]),
        rentals_ended=int(row[2]),
        revenue_fen=int(row[3]),
        active_rentals=int(row[4]),
        rentals_started_since=int(row[5]) if since is not None else None,
        revenue_since_fen=int(row[6]) if since is not None else None,
    )
