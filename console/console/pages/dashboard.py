"""The dashboard: today's figures from the services that own them, pushed to the open page over
server-sent events whenever they change (and a short poll where EventSource is unavailable)."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from console.backend import BackendError, SessionExpired
from console.charts import BarChart, bar_chart
from console.formatting import percent, yuan
from console.sessions import COOKIE, StaffSession
from console.web import Console, ConsoleDep, keep_fresh, page_permission, render, render_fragment

router = APIRouter()
OPEN_TICKET_STATUSES = ("new", "assigned", "waiting_user", "reopened")
TICKET_PAGE = 100
ALARM_PAGE = 1000  # device-svc reads at most this many banks and cabinets with alarms: from there on "N+"


@dataclass
class Figures:
    """What the dashboard shows; a figure the role may not read stays None and is not shown."""

    values: dict[str, str] = field(default_factory=dict)
    per_hour: BarChart | None = None
    active_users: BarChart | None = None
    errors: list[str] = field(default_factory=list)


def start_of_today(zone: ZoneInfo, now: datetime | None = None) -> datetime:
    """Midnight of the operator's day (CONSOLE_TIMEZONE): "today" on the dashboard."""
    local = (now or datetime.now(UTC)).astimezone(zone)
    return datetime(local.year, local.month, local.day, tzinfo=zone)


async def _overview(console: Console, staff: StaffSession, figures: Figures) -> None:
    s = console.backend.services
    since = start_of_today(console.zone).isoformat()
    overview: dict[str, Any] = await console.backend.get(
        f"{s.analytics}/v1/stats/overview", staff.access_token, since=since
    )
    figures.values["rentals_now"] = str(overview["active_rentals"])
    figures.values["rentals_today"] = str(overview["rentals_started_since"])
    figures.values["revenue_today"] = yuan(int(overview["revenue_since_fen"]))
    figures.values["revenue"] = yuan(int(overview["revenue_fen"]))
    hours = await console.backend.get(f"{s.analytics}/v1/stats/rentals-per-hour", staff.access_token, days=1)
    figures.per_hour = bar_chart([(str(b["hour"]), int(b["rentals"])) for b in hours["buckets"]], every=3)


async def _analyses(console: Console, staff: StaffSession, figures: Figures) -> None:
    s = console.backend.services
    active = await console.backend.get(f"{s.analytics}/v1/analytics/active-users", staff.access_token)
    figures.active_users = bar_chart([(r["period_start"][5:], int(r["active"])) for r in active["rows"]])


async def _devices(console: Console, staff: StaffSession, figures: Figures) -> None:
    s = console.backend.services
    presence = await console.backend.get(f"{s.device}/v1/ops/presence", staff.access_token, silent_limit=0)
    online, total = int(presence["online"]), int(presence["cabinets"])
    figures.values["cabinets_online"] = f"{percent(online, total)} ({online}/{total})"
    alarms = await console.backend.get(f"{s.device}/v1/ops/alarms", staff.access_token, limit=ALARM_PAGE)
    count = len(alarms["items"])
    figures.values["open_alarms"] = f"{count}+" if count >= ALARM_PAGE else str(count)


async def _tickets(console: Console, staff: StaffSession, figures: Figures) -> None:
    s = console.backend.services
    params = [("status", status) for status in OPEN_TICKET_STATUSES] + [("limit", TICKET_PAGE)]
    page = await console.backend.call("GET", f"{s.notify}/v1/admin/tickets", token=staff.access_token, params=params)
    count = len(page["items"])
    figures.values["open_tickets"] = f"{count}+" if page.get("next_before") else str(count)


async def gather(console: Console, staff: StaffSession) -> Figures:
    figures = Figures()
    parts = [
        (_overview, "stats:read"),
        (_analyses, "analytics:read"),
        (_devices, "devices:read"),
        (_tickets, "tickets:read"),
    ]
    wanted = [part(console, staff, figures) for part, permission in parts if staff.can(permission)]
    for outcome in await asyncio.gather(*wanted, return_exceptions=True):
        if isinstance(outcome, SessionExpired):
            raise outcome
        if isinstance(outcome, BackendError):
            figures.errors.append(f"{outcome.code}: {outcome.detail}")
        elif isinstance(outcome, BaseException):
            raise outcome
    return figures


@router.get("/", response_class=HTMLResponse)
async def dashboard(
    request: Request, console: ConsoleDep, staff: StaffSession = Depends(page_permission("nav.dashboard"))
) -> HTMLResponse:
    figures = await gather(console, staff)
    return render(request, "dashboard.html", staff, figures=figures)


@router.get("/dashboard/live", response_class=HTMLResponse)
async def live(
    request: Request, console: ConsoleDep, staff: StaffSession = Depends(page_permission("nav.dashboard"))
) -> HTMLResponse:
    """The figures alone, for the page's poll to swap in."""
    figures = await gather(console, staff)
    return render(request, "dashboard_figures.html", staff, figures=figures)


def sse(event: str, html: str) -> str:
    """One server-sent event; every line of the fragment is its own `data:` line."""
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"


async def figure_events(request: Request, console: Console, session_id: str) -> AsyncIterator[str]:
    """Every `CONSOLE_POLL_S` the figures are gathered with the session's token and sent when they
    changed (a comment otherwise keeps the connection open through proxies). The stream ends with a
    `signed_out` event when the session ends (sign-out, token expiry, idle); an open dashboard does not
    keep a session alive: it looks the session up without restarting its idle clock."""
    last = ""
    yield f"retry: {console.settings.console_poll_s * 1000}\n\n"
    while not await request.is_disconnected():
        staff = await console.store.peek(session_id)
        if staff is None or not await keep_fresh(console, staff):
            await console.store.end(session_id)
            yield sse("signed_out", "")
            return
        try:
            html = render_fragment(console, "dashboard_figures.html", staff, figures=await gather(console, staff))
        except SessionExpired:
            await console.store.end(session_id)
            yield sse("signed_out", "")
            return
        if html != last:
            last = html
            yield sse("figures", html)
        else:
            yield ": unchanged\n\n"
        await asyncio.sleep(console.settings.console_poll_s)  # the refresh period, not a wait for a condition


@router.get("/dashboard/events")
async def events(
    request: Request, console: ConsoleDep, staff: StaffSession = Depends(page_permission("nav.dashboard"))
) -> StreamingResponse:
    session_id = request.cookies.get(COOKIE, "")
    return StreamingResponse(
        figure_events(request, console, session_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
