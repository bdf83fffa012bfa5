from typing import Annotated

from fastapi import APIRouter, Depends, Query

from analytics_svc.settings import Settings
from analytics_svc.stats import service
from analytics_svc.stats.schemas import HourBucket, OverviewOut, RentalsPerHourOut
from kit.app import RuntimeDep
from kit.auth import Principal, require_permission
from kit.db import SessionDep
from kit.inputs import UtcDatetime

StatsReader = Annotated[Principal, Depends(require_permission("stats:read"))]

router = APIRouter(prefix="/v1/stats", tags=["stats"])


def _settings(runtime: RuntimeDep) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


@router.get("/rentals-per-hour")
async def rentals_per_hour(
    _: StatsReader,
    session: SessionDep,
    runtime: RuntimeDep,
    days: Annotated[int, Query(ge=1, le=90, description="Rentals started in the last `days` days")] = 7,
) -> RentalsPerHourOut:
    settings = _settings(runtime)
    zone = settings.zone
    stats = await service.rentals_per_hour(session, zone, days)
    return RentalsPerHourOut(
        timezone=settings.stats_timezone,
        from_=stats.start.astimezone(zone),
        to=stats.end.astimezone(zone),
        buckets=[HourBucket(hour=hour, rentals=n) for hour, n in enumerate(stats.counts)],
    )


@router.get("/overview")
async def overview(
    _: StatsReader,
    session: SessionDep,
    since: Annotated[UtcDatetime | None, Query(description="Also count rentals started and revenue since")] = None,
) -> OverviewOut:
    """Totals to date; with `since`, also what happened since then (a day in the caller's zone)."""
    o = await service.overview(session, since)
    return OverviewOut(
        users_registered=o.users_registered,
        rentals_started=o.rentals_started,
        rentals_ended=o.rentals_ended,
        revenue_fen=o.revenue_fen,
        active_rentals=o.active_rentals,
        since=since,
        rentals_started_since=o.rentals_started_since,
        revenue_since_fen=o.revenue_since_fen,
    )
