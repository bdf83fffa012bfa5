"""Finance (asset-credit `/v1/admin/finance/ledger-report`, `ledger:read`): the ledger's report for a
period chosen as days in the operator's zone (today by default): what is owed to users, deposits held,
revenue, each account kind's opening, increases, decreases and closing, the movements by kind, and the
two checks that every posting has its counterpart (both zero)."""

from datetime import date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from console.sessions import StaffSession
from console.web import ConsoleDep, FormInvalid, page_permission, render

router = APIRouter()
Finance = Annotated[StaffSession, Depends(page_permission("nav.finance"))]
DAY = "^(|[0-9]{4}-[0-9]{2}-[0-9]{2})$"


def day_of(value: str, field: str, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FormInvalid(field, value) from None


@router.get("/finance", response_class=HTMLResponse)
async def finance(
    request: Request,
    console: ConsoleDep,
    staff: Finance,
    since: Annotated[str, Query(pattern=DAY)] = "",
    until: Annotated[str, Query(pattern=DAY)] = "",
) -> HTMLResponse:
    today = datetime.now(console.zone).date()
    first = day_of(since, "since", today)
    last = day_of(until, "until", first)
    if last < first:
        raise FormInvalid("until", until)
    start = datetime.combine(first, time(), console.zone)
    end = datetime.combine(last + timedelta(days=1), time(), console.zone)
    report = await console.backend.get(
        f"{console.backend.services.asset}/v1/admin/finance/ledger-report",
        staff.access_token,
        since=start.isoformat(),
        until=end.isoformat(),
    )
    return render(request, "finance.html", staff, report=report, since=first.isoformat(), until=last.isoformat())
