"""Operator analyses (T/CA006-2018 6.3.6): JSON, or CSV with `format=csv`. Permission
`analytics:read` (operators and analysts, from the kit's role table)."""

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from analytics_svc.analyses import service
from analytics_svc.analyses.repository import PostgresStore
from analytics_svc.analyses.schemas import (
    ActiveUsersOut,
    ActiveUsersRow,
    BanksPerRegionOut,
    BanksRow,
    CellRow,
    Filters,
    FlowRow,
    FlowsOut,
    HeatMapOut,
    RegionRow,
    RegionsOut,
    RentalsOut,
    RentalsRow,
)
from analytics_svc.analyses.store import BankCounts
from analytics_svc.settings import Settings
from contracts.regions import CELL_RESOLUTION, DIVISION_CODE_PATTERN, DivisionLevel, name_of
from kit.app import RuntimeDep
from kit.auth import Principal, require_permission
from kit.csv_export import csv_response
from kit.db import SessionDep
from kit.ratelimit import rate_class

AnalyticsReader = Annotated[Principal, Depends(require_permission("analytics:read"))]
Region = Annotated[
    str | None, Query(pattern=DIVISION_CODE_PATTERN, description="Only this division (six-digit code) and inside it")
]
Level = Annotated[DivisionLevel, Query(description="Group by province, city or district")]
From = Annotated[date | None, Query(alias="from", description="First local day (default: 6 days before `to`)")]
To = Annotated[date | None, Query(alias="to", description="Last local day, included (default: today)")]
Format = Annotated[Literal["json", "csv"], Query(description="csv: the rows as a CSV file")]

# Analyses scan the fact tables and answer CSV exports: the stricter `export` limit.
router = APIRouter(prefix="/v1/analytics", tags=["analytics"], dependencies=[rate_class("export")])


def _settings(runtime: RuntimeDep) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


def _filters(settings: Settings, region: str | None, p: service.Period | None = None) -> Filters:
    return Filters(
        region=region,
        timezone=settings.stats_timezone,
        from_=p.first if p else None,
        to=p.last if p else None,
    )


def _period(settings: Settings, first: date | None, last: date | None) -> service.Period:
    return service.period(first, last, settings.zone, datetime.now(UTC))


@router.get("/banks-per-region", response_model=BanksPerRegionOut)
async def banks_per_region(
    _: AnalyticsReader,
    session: SessionDep,
    settings: SettingsDep,
    region: Region = None,
    level: Level = DivisionLevel.DISTRICT,
    format: Format = "json",
) -> BanksPerRegionOut | Response:
    lost_after = timedelta(hours=settings.lost_after_hours)
    counts = await service.banks_per_region(PostgresStore(session), region, level, datetime.now(UTC), lost_after)
    rows = [BanksRow(division_code=c.division, name=name_of(c.division), **_counts(c)) for c in counts]
    if format == "csv":
        return csv_response(rows, list(BanksRow.model_fields), "banks-per-region")
    return BanksPerRegionOut(
        filters=_filters(settings, region), level=level, lost_after_hours=settings.lost_after_hours, rows=rows
    )


def _counts(c: BankCounts) -> dict[str, int]:
    return {"in_cabinets": c.in_cabinets, "rented": c.rented, "faulty": c.faulty, "lost": c.lost}


@router.get("/active-users", response_model=ActiveUsersOut)
async def active_users(
    _: AnalyticsReader,
    session: SessionDep,
    settings: SettingsDep,
    region: Region = None,
    first: From = None,
    last: To = None,
    granularity: Annotated[
        Literal["day", "week", "month"], Query(description="day: DAU, week: WAU (ISO weeks), month: MAU")
    ] = "day",
    format: Format = "json",
) -> ActiveUsersOut | Response:
    p = _period(settings, first, last)
    found = await service.active_users(PostgresStore(session), region, p, granularity)
    rows = [
        ActiveUsersRow(period_start=a.period_start, active=a.active, new=a.new, returning=a.active - a.new)
        for a in found
    ]
    if format == "csv":
        return csv_response(rows, list(ActiveUsersRow.model_fields), "active-users")
    return ActiveUsersOut(filters=_filters(settings, region, p), granularity=granularity, rows=rows)


@router.get("/rentals", response_model=RentalsOut)
async def rentals(
    _: AnalyticsReader,
    session: SessionDep,
    settings: SettingsDep,
    region: Region = None,
    first: From = None,
    last: To = None,
    granularity: Annotated[Literal["hour_of_day", "day", "hour"], Query()] = "hour_of_day",
    format: Format = "json",
) -> RentalsOut | Response:
    p = _period(settings, first, last)
    found = await service.rentals(PostgresStore(session), region, p, granularity)
    rows = [RentalsRow(bucket=b, rentals=n) for b, n in found]
    if format == "csv":
        return csv_response(rows, list(RentalsRow.model_fields), f"rentals-per-{granularity}")
    return RentalsOut(filters=_filters(settings, region, p), granularity=granularity, rows=rows)


@router.get("/regions", response_model=RegionsOut)
async def regions(
    _: AnalyticsReader,
    session: SessionDep,
    settings: SettingsDep,
    region: Region = None,
    level: Level = DivisionLevel.DISTRICT,
    first: From = None,
    last: To = None,
    format: Format = "json",
) -> RegionsOut | Response:
    p = _period(settings, first, last)
    found = await service.regions_ranked(PostgresStore(session), region, level, p)
    rows = [
        RegionRow(rank=i, division_code=c.key, name=name_of(c.key), rentals=c.rentals) for i, c in enumerate(found, 1)
    ]
    if format == "csv":
        return csv_response(rows, list(RegionRow.model_fields), "active-regions")
    return RegionsOut(filters=_filters(settings, region, p), level=level, rows=rows)


@router.get("/heat-map", response_model=HeatMapOut)
async def heat_map(
    _: AnalyticsReader,
    session: SessionDep,
    settings: SettingsDep,
    region: Region = None,
    first: From = None,
    last: To = None,
    resolution: Annotated[int, Query(ge=4, le=CELL_RESOLUTION, description="H3 resolution of the cells")] = (
        CELL_RESOLUTION
    ),
    format: Format = "json",
) -> HeatMapOut | Response:
    p = _period(settings, first, last)
    found = await service.heat_map(PostgresStore(session), region, p, resolution)
    rows = [CellRow(cell=c.cell, lat=c.lat, lon=c.lon, rentals=c.rentals) for c in found]
    if format == "csv":
        return csv_response(rows, list(CellRow.model_fields), "heat-map")
    return HeatMapOut(filters=_filters(settings, region, p), resolution=resolution, rows=rows)


@router.get("/flows", response_model=FlowsOut)
async def flows(
    _: AnalyticsReader,
    session: SessionDep,
    settings: SettingsDep,
    region: Region = None,
    level: Level = DivisionLevel.DISTRICT,
    first: From = None,
    last: To = None,
    format: Format = "json",
) -> FlowsOut | Response:
    """Borrow-to-return origin-destination matrix: rentals returned, by start and return division
    (either of them in `region`), counted in the period they started."""
    p = _period(settings, first, last)
    found = await service.flows(PostgresStore(session), region, level, p)
    rows = [
        FlowRow(
            origin=f.origin,
            origin_name=name_of(f.origin),
            destination=f.destination,
            destination_name=name_of(f.destination),
            rentals=f.rentals,
        )
        for f in found
    ]
    if format == "csv":
        return csv_response(rows, list(FlowRow.model_fields), "flows")
    return FlowsOut(filters=_filters(settings, region, p), level=level, rows=rows)
