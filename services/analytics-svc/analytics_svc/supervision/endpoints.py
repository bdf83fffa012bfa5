"""Government supervision interface (T/CA006-2018 clause 5), modelled on the MDS 2.0 Provider API:
only a regulator's credential (`kit.auth.require_regulator`), every access audited, `Accept:
application/vnd.mds+json;version=2.0` or 406. docs/supervision.md."""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from analytics_svc.settings import Settings
from analytics_svc.supervision import deposits, mds
from analytics_svc.supervision import repository as repo
from analytics_svc.supervision.service import Feed
from kit.app import RuntimeDep
from kit.auth import Principal, require_regulator
from kit.db import SessionDep, unit_of_work
from kit.errors import Forbidden

Regulator = Annotated[Principal, Depends(require_regulator())]
RECENT_WINDOW = timedelta(weeks=2)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


async def _audited(request: Request, principal: Regulator, runtime: RuntimeDep) -> Principal:
    """Record the access in a transaction of its own, before anything can fail, then negotiate."""
    async with unit_of_work(runtime.sessionmaker) as session:
        repo.record_access(
            session,
            at=datetime.now(UTC),
            client_id=principal.subject[:64],
            token_id=principal.token_id[:64],
            method=request.method,
            path=request.url.path[:200],
            query=str(request.url.query)[:500],
            regions=",".join(sorted(principal.supervision_regions))[:200],
        )
    mds.negotiate(request)
    return principal


Access = Annotated[Principal, Depends(_audited)]
router = APIRouter(prefix="/v1/supervision", tags=["supervision"])


def _settings(runtime: RuntimeDep) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


def _feed(session: SessionDep, settings: SettingsDep, principal: Access) -> Feed:
    key = settings.supervision_id_key.get_secret_value().encode()
    return Feed(session, str(settings.mds_provider_id), key, principal.supervision_regions)


FeedDep = Annotated[Feed, Depends(_feed)]


def _hourly(value: str | None, name: str, settings: Settings) -> tuple[datetime, datetime] | Response:
    hour = mds.parse_hour(value, name)
    state = mds.hour_state(hour, datetime.now(UTC), timedelta(seconds=settings.supervision_hour_lag_s))
    if state == "future":
        raise mds.HourNotFound(f"{value} has not begun", error="not_found")
    if state == "open":
        return mds.mds_json({"status": "processing", "detail": f"{value} is not complete yet"}, status=202)
    return hour, hour + timedelta(hours=1)


def _near_real_time(settings: Settings, body: dict[str, Any]) -> Response:
    return mds.mds_json({**body, "last_updated": mds.ms(datetime.now(UTC)), "ttl": settings.supervision_ttl_ms})


@router.get("/trips")
async def trips(
    _: Access,
    feed: FeedDep,
    settings: SettingsDep,
    end_time: Annotated[str | None, Query(description="YYYY-MM-DDTHH, a UTC hour")] = None,
) -> Response:
    """Rentals that ended in the UTC hour `end_time`: 400 without it, 404 for an hour not begun, 202
    until it is complete, else 200 (an empty list included)."""
    window = _hourly(end_time, "end_time", settings)
    if isinstance(window, Response):
        return window
    return mds.mds_json({"trips": await feed.trips(*window)})


@router.get("/events/historical")
async def events_historical(
    _: Access,
    feed: FeedDep,
    settings: SettingsDep,
    event_time: Annotated[str | None, Query(description="YYYY-MM-DDTHH, a UTC hour")] = None,
) -> Response:
    window = _hourly(event_time, "event_time", settings)
    if isinstance(window, Response):
        return window
    return mds.mds_json({"events": await feed.events(*window)})


@router.get("/telemetry")
async def telemetry(
    _: Access,
    feed: FeedDep,
    settings: SettingsDep,
    telemetry_time: Annotated[str | None, Query(description="YYYY-MM-DDTHH, a UTC hour")] = None,
) -> Response:
    """Bank module positions reported in the UTC hour `telemetry_time` (cell centres, trip ids keyed):
    the hourly rules of /trips."""
    window = _hourly(telemetry_time, "telemetry_time", settings)
    if isinstance(window, Response):
        return window
    return mds.mds_json({"telemetry": await feed.telemetry(*window)})


def _ms_param(value: str | None, name: str) -> datetime:
    if value is None or not value.isdigit():
        raise mds.BadParam(f"`{name}` is required as milliseconds since the epoch", error="bad_param", param=name)
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise mds.BadParam(f"`{name}` is out of range", error="bad_param", param=name) from None


@router.get("/events/recent")
async def events_recent(
    _: Access,
    feed: FeedDep,
    settings: SettingsDep,
    start_time: Annotated[str | None, Query(description="ms since the epoch, included")] = None,
    end_time: Annotated[str | None, Query(description="ms since the epoch, excluded")] = None,
) -> Response:
    """State changes in [start_time, end_time), at most two weeks back (400 otherwise)."""
    start, end = _ms_param(start_time, "start_time"), _ms_param(end_time, "end_time")
    now = datetime.now(UTC)
    if start < now - RECENT_WINDOW or end < now - RECENT_WINDOW:
        raise mds.BadParam("Recent events reach two weeks back; use /events/historical", error="bad_param")
    if end <= start:
        raise mds.BadParam("`end_time` must be after `start_time`", error="bad_param")
    return _near_real_time(settings, {"events": await feed.events(start, end)})


@router.get("/vehicles")
async def vehicles(_: Access, feed: FeedDep, settings: SettingsDep) -> Response:
    return _near_real_time(settings, {"vehicles": await feed.vehicles()})


@router.get("/vehicles/status")
async def vehicle_status(_: Access, feed: FeedDep, settings: SettingsDep) -> Response:
    return _near_real_time(settings, {"vehicles_status": await feed.vehicle_status()})


@router.get("/stops")
async def stops(_: Access, feed: FeedDep, settings: SettingsDep) -> Response:
    return _near_real_time(settings, {"stops": await feed.stops()})


class NotRegional(Forbidden):
    code = "not_regional"
    title = "Deposits are held per user, not per region: a credential limited to regions cannot read them"


def _month(month: str | None) -> tuple[datetime, datetime] | Response:
    """`YYYY-MM` (UTC): 400 malformed, 404 not begun, 202 not complete, else its [start, end)."""
    match = _MONTH.match(month or "")
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise mds.BadParam("`month` is required as YYYY-MM", error="bad_param", param="month")
    year, number = int(match.group(1)), int(match.group(2))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    if start > now:
        raise mds.HourNotFound(f"{month} has not begun", error="not_found")
    if end > now:
        return mds.mds_json({"status": "processing", "detail": f"{month} is not complete yet"}, status=202)
    return start, end


@router.get("/reports")
async def reports(
    _: Access,
    feed: FeedDep,
    month: Annotated[str | None, Query(description="YYYY-MM (UTC)")] = None,
) -> Response:
    """Monthly CSV (trips and riders per division, counts under 10 redacted as -1)."""
    window = _month(month)
    if isinstance(window, Response):
        return window
    body = await feed.report_csv(*window)
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="mds-report-{month}.csv"'},
    )


@router.get("/deposits")
async def deposits_now(principal: Access, session: SessionDep, settings: SettingsDep) -> Response:
    """Deposits held now and refunds not yet paid (near real time: `last_updated`, `ttl`)."""
    if principal.supervision_regions:
        raise NotRegional(error="forbidden")
    return _near_real_time(settings, {"deposits": await deposits.now(session)})


@router.get("/deposits/monthly")
async def deposits_monthly(
    principal: Access,
    session: SessionDep,
    month: Annotated[str | None, Query(description="YYYY-MM (UTC)")] = None,
) -> Response:
    """Deposits paid and refunds requested in a month, how many of those refunds were paid, within a day,
    and the seconds from request to payment (median, 95th percentile, longest). Hourly-style rules."""
    if principal.supervision_regions:
        raise NotRegional(error="forbidden")
    window = _month(month)
    if isinstance(window, Response):
        return window
    return mds.mds_json({"deposits": await deposits.month(session, str(month), *window)})
