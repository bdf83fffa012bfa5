from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.stats import repository
from analytics_svc.stats.bucketing import buckets_by_local_hour, window
from analytics_svc.stats.repository import Overview


@dataclass(frozen=True)
class RentalsPerHour:
    start: datetime
    end: datetime
    counts: list[int]


async def rentals_per_hour(
    session: AsyncSession, zone: ZoneInfo, days: int, now: datetime | None = None
) -> RentalsPerHour:
    start, end = window(now or datetime.now(UTC), days)
    slots = await repository.rentals_per_slot(session, start, end)
    return RentalsPerHour(start=start, end=end, counts=buckets_by_local_hour(slots, zone))


async def overview(session: AsyncSession, since: datetime | None = None) -> Overview:
    return await repository.overview(session, since)
