"""Marketing campaigns (notify-svc `/v1/admin/campaigns`, `campaigns:manage`): compose a message,
choose a segment and see how many users it selects now and how many each channel reaches, save it
as a draft, schedule it (now or at a time in the operator's zone), cancel it, and follow its delivery
(batches, inbox, push, SMS, unreached, opened, clicked)."""

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import Console, ConsoleDep, FormInvalid, page_permission, read_form, render

router = APIRouter()
Manager = Annotated[StaffSession, Depends(page_permission("nav.campaigns"))]
CHANNELS = ("inbox", "push", "sms")
TIME_RULES = ("last_active_after", "last_active_before", "registered_after", "registered_before")
DIVISION = re.compile(r"^\d{6}$")
FORM_FIELDS = ("title", "text", "audience", "regions", "credit_levels", *TIME_RULES, "has_unused_coupon")


def _shown(form: dict[str, str], channels: list[str]) -> dict[str, Any]:
    """The compose form's values as typed (every field present, for the template)."""
    return {**{f: form.get(f, "") for f in FORM_FIELDS}, "channels": channels}


def _local(console: Console, form: dict[str, str], field: str) -> str | None:
    """A datetime-local field, read in the operator's zone and sent with its offset."""
    typed = form.get(field, "").strip()
    if not typed:
        return None
    try:
        return datetime.fromisoformat(typed).replace(tzinfo=console.zone).isoformat()
    except ValueError:
        raise FormInvalid(field, typed) from None


def _segment(console: Console, form: dict[str, str]) -> dict[str, Any]:
    if form.get("audience") == "all":
        return {"all_users": True}
    segment: dict[str, Any] = {}
    regions = [r for r in re.split(r"[\s,，]+", form.get("regions", "")) if r]
    if regions:
        bad = next((r for r in regions if not DIVISION.match(r)), None)
        if bad is not None:
            raise FormInvalid("regions", bad)
        segment["regions"] = regions
    levels = [c for c in re.split(r"[\s,，]+", form.get("credit_levels", "")) if c]
    if levels:
        segment["credit_levels"] = levels
    for field in TIME_RULES:
        value = _local(console, form, field)
        if value is not None:
            segment[field] = value
    coupon = form.get("has_unused_coupon", "")
    if coupon in ("yes", "no"):
        segment["has_unused_coupon"] = coupon == "yes"
    return segment


async def _list(console: Console, staff: StaffSession) -> list[dict[str, Any]]:
    found = await console.backend.get(
        f"{console.backend.services.notify}/v1/admin/campaigns", staff.access_token, limit=50
    )
    items: list[dict[str, Any]] = found["items"]
    return items


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns(request: Request, console: ConsoleDep, staff: Manager) -> HTMLResponse:
    return render(
        request,
        "campaigns.html",
        staff,
        campaigns=await _list(console, staff),
        channels=CHANNELS,
        form=_shown({"audience": "rules"}, ["inbox"]),
        preview=None,
    )


@router.post("/campaigns", response_class=HTMLResponse)
async def compose(request: Request, console: ConsoleDep, staff: Manager) -> Response:
    """One form, two buttons: `preview` counts the segment now and shows the form again as typed;
    `create` saves the draft (nothing is sent until it is scheduled)."""
    form = await read_form(request, staff.csrf_token)
    segment = _segment(console, form)
    notify = console.backend.services.notify
    if form.get("action") == "preview":
        preview = await console.backend.post(
            f"{notify}/v1/admin/campaigns/preview", staff.access_token, {"segment": segment}
        )
        chosen = [c for c in CHANNELS if form.get(f"channel_{c}")]
        return render(
            request,
            "campaigns.html",
            staff,
            campaigns=await _list(console, staff),
            channels=CHANNELS,
            form=_shown(form, chosen),
            preview=preview,
        )
    body = {
        "title": form.get("title", "").strip(),
        "text": form.get("text", "").strip(),
        "segment": segment,
        "channels": [c for c in CHANNELS if form.get(f"channel_{c}")],
    }
    created = await console.backend.post(f"{notify}/v1/admin/campaigns", staff.access_token, body)
    return RedirectResponse(f"/campaigns/{created['campaign_id']}?done=campaign.saved", status_code=303)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign(request: Request, campaign_id: UUID, console: ConsoleDep, staff: Manager) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.notify}/v1/admin/campaigns/{campaign_id}", staff.access_token
    )
    rules = {k: v for k, v in found["segment"].items() if v not in (None, False)}
    return render(request, "campaign.html", staff, campaign=found, rules=rules, time_rules=TIME_RULES)


@router.post("/campaigns/{campaign_id}/schedule")
async def schedule(request: Request, campaign_id: UUID, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    send_at = _local(console, form, "send_at")
    await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/campaigns/{campaign_id}/schedule",
        staff.access_token,
        {"send_at": send_at} if send_at else {},
    )
    return RedirectResponse(f"/campaigns/{campaign_id}?done=campaign.scheduled_done", status_code=303)


@router.post("/campaigns/{campaign_id}/cancel")
async def cancel(request: Request, campaign_id: UUID, console: ConsoleDep, staff: Manager) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/campaigns/{campaign_id}/cancel", staff.access_token
    )
    return RedirectResponse(f"/campaigns/{campaign_id}?done=campaign.cancelled_done", status_code=303)
