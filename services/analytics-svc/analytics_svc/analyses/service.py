"""The analyses of T/CA006-2018 6.3.6 over an `AnalysisStore`: periods in local dates, answers in
the configured time zone, division names from the region model."""

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from analytics_svc.analyses.errors import InvalidPeriod
from analytics_svc.analyses.store import ActiveUsers, AnalysisStore, BankCounts, Count, Flow, Granularity
from contracts.regions import DivisionLevel, cell_center, cell_parent

MAX_DAYS = 366


@dataclass(frozen=True)
class Period:
    first: date  # local dates, both included
    last: date
    zone: ZoneInfo

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), self.zone).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), self.zone).astimezone(UTC)


def period(first: date | None, last: date | None, zone: ZoneInfo, now: datetime, default_days: int = 7) -> Period:
    today = now.astimezone(zone).date()
    last = last or today
    try:
        first = first or last - timedelta(days=default_days - 1)
        if first > last:
            raise InvalidPeriod("`from` is after `to`", first=first.isoformat(), last=last.isoformat())
        if (last - first).days + 1 > MAX_DAYS:
            raise InvalidPeriod(f"A period covers at most {MAX_DAYS} days")
        found = Period(first, last, zone)
        found.start, found.end  # noqa: B018 - both bounds must exist in UTC (not so at year 1 or 9999)
    except OverflowError:
        raise InvalidPeriod("The period lies outside the calendar (years 1 to 9999 in UTC)") from None
    return found


async def banks_per_region(
    store: AnalysisStore, region: str | None, level: DivisionLevel, now: datetime, lost_after: timedelta
) -> list[BankCounts]:
    return await store.bank_counts(region, level, now, lost_after)


async def active_users(
    store: AnalysisStore, region: str | None, p: Period, granularity: Granularity
) -> list[ActiveUsers]:
    return await store.active_users(region, p.first, p.last, granularity, p.zone.key)


async def rentals(store: AnalysisStore, region: str | None, p: Period, granularity: str) -> list[tuple[str, int]]:
    """(bucket, rentals): hour of day 0-23 (all of them), each local day of the period (all of them),
    or each local hour that had rentals (ISO times with offset)."""
    hours = await store.rentals_per_hour(region, p.start, p.end)
    if granularity == "hour_of_day":
        by_hour = Counter({h: 0 for h in range(24)})
        for row in hours:
            by_hour[row.hour.astimezone(p.zone).hour] += row.rentals
        return [(str(h), by_hour[h]) for h in range(24)]
    if granularity == "day":
        days = (p.last - p.first).days + 1
        by_day = Counter({(p.first + timedelta(days=n)).isoformat(): 0 for n in range(days)})
        for row in hours:
            by_day[row.hour.astimezone(p.zone).date().isoformat()] += row.rentals
        return sorted(by_day.items())
    return [(row.hour.astimezone(p.zone).isoformat(), row.rentals) for row in hours]


async def regions_ranked(store: AnalysisStore, region: str | None, level: DivisionLevel, p: Period) -> list[Count]:
    return await store.rentals_per_division(region, level, p.start, p.end)


@dataclass(frozen=True)
class Cell:
    cell: str
    lat: float
    lon: float
    rentals: int


async def heat_map(store: AnalysisStore, region: str | None, p: Period, resolution: int) -> list[Cell]:
    counts: Counter[str] = Counter()
    for row in await store.rentals_per_cell(region, p.start, p.end):
        counts[cell_parent(row.key, resolution)] += row.rentals
    cells = []
    for cell, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lat, lon = cell_center(cell)
        cells.append(Cell(cell, round(lat, 6), round(lon, 6), n))
    return cells


async def flows(store: AnalysisStore, region: str | None, level: DivisionLevel, p: Period) -> list[Flow]:
    return await store.flows(region, level, p.start, p.end)
