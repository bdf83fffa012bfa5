"""Advertisements (notify-svc `/v1/admin/ads`, `ads:manage`): app banners and cabinet screens with their
schedule (in the operator's zone) and regions, always labelled as advertisements; deduplicated impression
and click counts; create and withdraw. Cabinet-screen changes reach the cabinets as their playlist."""

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import Console, ConsoleDep, FormInvalid, page_permission, read_form, render

router = APIRouter()
Manager = Annotated[StaffSession, Depends(page_permission("nav.ads"))]
SLOTS = ("app_banner", "cabinet_screen")


def local_field(console: Console, form: dict[str, str], field: str) -> str:
    """A required datetime-local field, read in the operator's zone and sent with its offset."""
    typed = form.get(field, "").strip()
    try:
        return datetime.fromisoformat(typed).replace(tzinfo=console.zone).isoformat()
    except ValueError:
        raise FormInvalid(field, typed) from None


@router.get("/ads", response_class=HTMLResponse)
async def ads(
    request: Request,
    console: ConsoleDep,
    staff: Manager,
    slot: Annotated[str, Query(pattern="^(|app_banner|cabinet_screen)$")] = "",
) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.notify}/v1/admin/ads", staff.access_token, slot=slot or None, limit=100
    )
    return render(request, "ads.html", staff, ads=found["items"], slot=slot, slots=SLOTS)


@router.post("/ads")
async def create(request: Request, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    slot = form.get("slot", "")
    if slot not in SLOTS:
        raise FormInvalid("slot", slot)
    display = form.get("display_s", "").strip() or "15"
    if not display.isdigit():
        raise FormInvalid("display_s", display)
    body: dict[str, Any] = {
        "slot": slot,
        "advertiser": form.get("advertiser", ""),
        "title": form.get("title", ""),
        "text": form.get("text", ""),
        "display_s": int(display),
        "regions": [r for r in re.split(r"[\s,，]+", form.get("regions", "")) if r],
        "starts_at": local_field(console, form, "starts_at"),
        "ends_at": local_field(console, form, "ends_at"),
    }
    for field in ("media_url", "link_url"):
        if form.get(field, "").strip():
            body[field] = form[field].strip()
    created = await console.backend.post(f"{console.backend.services.notify}/v1/admin/ads", staff.access_token, body)
    return RedirectResponse(f"/ads?done=ad.created#ad-{created['ad_id']}", status_code=303)


@router.post("/ads/{ad_id}/withdraw")
async def withdraw(request: Request, ad_id: UUID, console: ConsoleDep, staff: Manager) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(f"{console.backend.services.notify}/v1/admin/ads/{ad_id}/withdraw", staff.access_token)
    return RedirectResponse("/ads?done=ad.withdrawn_done", status_code=303)
