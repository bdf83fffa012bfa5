"""Reconciliation per payment channel (asset-credit, `ledger:read`): every order of a period checked
against what the channel says about it (`/v1/admin/reconciliation/{channel}`), and a day's statement from
the channel reconciled with our records (`.../statements/{date}`: the last result, or fetch and reconcile
now). Mismatches are listed, never corrected here."""

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.backend import BackendError
from console.pages.finance import DAY, day_of
from console.sessions import StaffSession
from console.web import ConsoleDep, FormInvalid, page_permission, read_form, render

router = APIRouter()
Finance = Annotated[StaffSession, Depends(page_permission("nav.reconciliation"))]
CHANNELS = ("alipay", "wechat", "bank_card")
Channel = Annotated[str, Query(pattern="^(alipay|wechat|bank_card)$")]


@router.get("/reconciliation", response_class=HTMLResponse)
async def reconciliation(
    request: Request,
    console: ConsoleDep,
    staff: Finance,
    channel: Channel = "alipay",
    since: Annotated[str, Query(pattern=DAY)] = "",
    until: Annotated[str, Query(pattern=DAY)] = "",
    bill_date: Annotated[str, Query(pattern=DAY)] = "",
) -> HTMLResponse:
    today = datetime.now(console.zone).date()
    first = day_of(since, "since", today)
    last = day_of(until, "until", first)
    if last < first:
        raise FormInvalid("until", until)
    bill = day_of(bill_date, "bill_date", today - timedelta(days=1))
    base = f"{console.backend.services.asset}/v1/admin/reconciliation/{channel}"
    orders = await console.backend.get(
        base,
        staff.access_token,
        since=datetime.combine(first, time(), console.zone).isoformat(),
        until=datetime.combine(last + timedelta(days=1), time(), console.zone).isoformat(),
    )
    statement: dict[str, Any] | None = None
    statement_error = ""
    try:
        statement = await console.backend.get(f"{base}/statements/{bill.isoformat()}", staff.access_token)
    except BackendError as exc:
        if exc.status in (401, 403) or exc.status >= 500:
            raise
        statement_error = exc.code  # not reconciled yet, or a channel without statements
    return render(
        request,
        "reconciliation.html",
        staff,
        channel=channel,
        channels=CHANNELS,
        since=first.isoformat(),
        until=last.isoformat(),
        bill_date=bill.isoformat(),
        orders=orders,
        statement=statement,
        statement_error=statement_error,
    )


@router.post("/reconciliation/{channel}/statements/{bill_date}")
async def reconcile_statement(
    request: Request,
    console: ConsoleDep,
    staff: Finance,
    channel: Annotated[str, Path(pattern="^(alipay|wechat|bank_card)$")],
    bill_date: date,
) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.asset}/v1/admin/reconciliation/{channel}/statements/{bill_date.isoformat()}",
        staff.access_token,
    )
    return RedirectResponse(
        f"/reconciliation?channel={channel}&bill_date={bill_date.isoformat()}&done=recon.statement_done",
        status_code=303,
    )
