"""Devices: the map, cabinets, banks and alarms (device-svc's registry and ops APIs), with the actions
device-svc offers staff: ring a bank, eject it for maintenance (with a reason, audited), switch a
cabinet's light, mark a bank faulty, lost or in maintenance (with a reason, recorded by device-svc as a
transition), rotate a device's credentials, resolve an alarm with a note (which closes its task)."""

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import geo
from console.sessions import StaffSession
from console.web import ConsoleDep, page_permission, read_form, render, require

router = APIRouter()

DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DeviceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Search = Annotated[str, Query(max_length=64)]
Reader = Annotated[StaffSession, Depends(page_permission("nav.cabinets"))]
Maintainer = Annotated[StaffSession, Depends(require("devices:maintain"))]
Provisioner = Annotated[StaffSession, Depends(require("devices:provision"))]
CABINET_STATES = ("online", "offline", "alarm", "full", "empty")
MANUAL_STATES = ("faulty", "lost", "maintenance", "in_cabinet", "retired")
RESOLVABLE_ALARMS = ("moved_while_idle", "high_temperature", "position_overdue", "maintenance_due")


CABINET_PAGE = 1000  # device-svc's largest page of /v1/cabinets
MAX_SCANNED_PAGES = 20  # one console answer reads at most 20,000 cabinets
CABINETS_SHOWN = 100  # rows on one page of the cabinet list


async def _alarmed(console: ConsoleDep, staff: StaffSession) -> list[dict[str, Any]]:
    found = await console.backend.get(
        f"{console.backend.services.device}/v1/ops/alarms", staff.access_token, limit=1000
    )
    items: list[dict[str, Any]] = found["items"]
    return items


async def _scan_cabinets(
    console: ConsoleDep,
    staff: StaffSession,
    alarms: list[dict[str, Any]],
    keep: Callable[[dict[str, Any]], bool],
    *,
    after: str | None = None,
    wanted: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Read device-svc's cabinets a page at a time from `after`, keeping those `keep` accepts, until `wanted`
    are kept, the fleet ends or MAX_SCANNED_PAGES were read. Answers the kept ones and where to go on
    (None: the fleet has no more)."""
    alarmed = {a["device_id"] for a in alarms if a["device_kind"] == "cabinet"}
    kept: list[dict[str, Any]] = []
    cursor = after
    for _ in range(MAX_SCANNED_PAGES):
        page = await console.backend.get(
            f"{console.backend.services.device}/v1/cabinets", staff.access_token, after=cursor, limit=CABINET_PAGE
        )
        for c in page["items"]:
            c["status"] = geo.cabinet_state(c, alarmed)
            if keep(c):
                kept.append(c)
                if wanted is not None and len(kept) == wanted:
                    return kept, c["id"]
        cursor = page["next_after"]
        if cursor is None:
            return kept, None
    return kept, cursor


def _matches(cabinet: dict[str, Any], q: str) -> bool:
    needle = q.strip().lower()
    return not needle or any(needle in str(cabinet[k]).lower() for k in ("id", "name", "address"))


@router.get("/map", response_class=HTMLResponse)
async def cabinet_map(
    request: Request,
    console: ConsoleDep,
    staff: Annotated[StaffSession, Depends(page_permission("nav.map"))],
    q: Search = "",
) -> HTMLResponse:
    cabinets, more = await _scan_cabinets(console, staff, await _alarmed(console, staff), lambda _: True)
    cells: list[dict[str, Any]] = []
    if staff.can("analytics:read"):
        heat = await console.backend.get(
            f"{console.backend.services.analytics}/v1/analytics/heat-map", staff.access_token
        )
        cells = heat["rows"]
    projection = geo.projection([(c["lat"], c["lon"]) for c in cabinets])
    top = max((c["rentals"] for c in cells), default=0)
    hotspots = [
        {
            "cell": c["cell"],
            "rentals": c["rentals"],
            "points": geo.cell_outline(c["cell"], projection),
            "level": min(4, 1 + (4 * c["rentals"]) // max(top, 1)),
        }
        for c in cells
    ]
    for c in cabinets:
        c["x"], c["y"] = projection.xy(c["lat"], c["lon"])
        c["found"] = bool(q.strip()) and _matches(c, q)
    found = [c for c in cabinets if c["found"]]
    view = f"0 0 {geo.WIDTH} {geo.HEIGHT}"
    if found:  # centre on the first match, zoomed in
        w, h = geo.WIDTH / 3, geo.HEIGHT / 3
        view = f"{found[0]['x'] - w / 2:.1f} {found[0]['y'] - h / 2:.1f} {w:.1f} {h:.1f}"
    return render(
        request,
        "map.html",
        staff,
        cabinets=cabinets,
        hotspots=hotspots,
        grid=geo.grid(projection),
        width=geo.WIDTH,
        height=geo.HEIGHT,
        view=view,
        q=q,
        found=found,
        states=CABINET_STATES,
        partial=more is not None,
    )


@router.get("/cabinets", response_class=HTMLResponse)
async def cabinets_page(
    request: Request,
    console: ConsoleDep,
    staff: Reader,
    q: Search = "",
    state: Annotated[str, Query(pattern="^(|online|offline|alarm|full|empty)$")] = "",
    after: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """The whole fleet, CABINETS_SHOWN matching rows at a time (in id order, from `after`)."""

    def keep(c: dict[str, Any]) -> bool:
        return _matches(c, q) and (not state or c["status"] == state)

    alarms = await _alarmed(console, staff)
    shown, next_after = await _scan_cabinets(console, staff, alarms, keep, after=after or None, wanted=CABINETS_SHOWN)
    more = urlencode({"q": q, "state": state, "after": next_after}) if next_after else ""
    return render(
        request, "cabinets.html", staff, cabinets=shown, q=q, state=state, states=CABINET_STATES, more=more, after=after
    )


@router.get("/cabinets/{cabinet_id}", response_class=HTMLResponse)
async def cabinet_page(request: Request, cabinet_id: DeviceId, console: ConsoleDep, staff: Reader) -> HTMLResponse:
    s = console.backend.services
    cabinet, banks, alarms = await asyncio.gather(
        console.backend.get(f"{s.device}/v1/cabinets/{cabinet_id}", staff.access_token),
        console.backend.get(f"{s.device}/v1/ops/banks", staff.access_token, cabinet_id=cabinet_id, limit=1000),
        console.backend.get(f"{s.device}/v1/ops/alarms", staff.access_token, limit=1000),
    )
    mine = [a for a in alarms["items"] if a["device_id"] == cabinet_id]
    cabinet["status"] = geo.cabinet_state(cabinet, {cabinet_id} if mine else set())
    by_id = {b["id"]: b for b in banks["items"]}
    return render(request, "cabinet.html", staff, cabinet=cabinet, banks=by_id, alarms=mine)


BANKS_SHOWN = 100  # rows on one page of the bank list


@router.get("/banks", response_class=HTMLResponse)
async def banks_page(
    request: Request,
    console: ConsoleDep,
    staff: Reader,
    q: Search = "",
    state: Annotated[str, Query(pattern="^(|in_cabinet|rented|faulty|maintenance|lost|retired)$")] = "",
    cabinet_id: Search = "",
    after: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """The whole fleet of banks, BANKS_SHOWN at a time in id order: device-svc searches (an id prefix, or a
    bank's QR code, NFC uid or BLE address), filters and pages (keyset, from `after`)."""
    s = console.backend.services
    found = await console.backend.get(
        f"{s.device}/v1/ops/banks",
        staff.access_token,
        q=q.strip() or None,
        state=state or None,
        cabinet_id=cabinet_id.strip() or None,
        after=after or None,
        limit=BANKS_SHOWN,
    )
    next_after = found.get("next_after")
    more = urlencode({"q": q, "state": state, "cabinet_id": cabinet_id, "after": next_after}) if next_after else ""
    states = ("in_cabinet", "rented", "faulty", "maintenance", "lost", "retired")
    return render(
        request,
        "banks.html",
        staff,
        banks=found["items"],
        q=q,
        state=state,
        cabinet_id=cabinet_id,
        states=states,
        more=more,
        after=after,
    )


@router.get("/banks/{bank_id}", response_class=HTMLResponse)
async def bank_page(request: Request, bank_id: DeviceId, console: ConsoleDep, staff: Reader) -> HTMLResponse:
    s = console.backend.services
    bank, transitions = await asyncio.gather(
        console.backend.get(f"{s.device}/v1/ops/banks/{bank_id}", staff.access_token),
        console.backend.get(
            f"{s.device}/v1/ops/banks/{bank_id}/transitions", staff.access_token, order="newest", limit=20
        ),
    )
    return render(
        request,
        "bank.html",
        staff,
        bank=bank,
        transitions=transitions["items"],
        manual_states=MANUAL_STATES,
        password=None,
    )


@router.post("/banks/{bank_id}/ring")
async def ring(request: Request, bank_id: DeviceId, console: ConsoleDep, staff: Maintainer) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(f"{console.backend.services.device}/v1/ops/banks/{bank_id}/ring", staff.access_token)
    return RedirectResponse(f"/banks/{quote(bank_id)}?done=bank.rang", status_code=303)


@router.post("/banks/{bank_id}/eject")
async def eject(request: Request, bank_id: DeviceId, console: ConsoleDep, staff: Maintainer) -> Response:
    """Eject for maintenance with a reason; device-svc audits it and, on the cabinet's ok, holds the bank
    in maintenance out of its slot."""
    form = await read_form(request, staff.csrf_token)
    body = {"reason": form.get("reason", "").strip()}
    await console.backend.post(
        f"{console.backend.services.device}/v1/ops/banks/{bank_id}/eject", staff.access_token, body
    )
    # Sent from a slot of the cabinet's page: back there, where the slot empties.
    cabinet_id = form.get("cabinet_id", "")
    if cabinet_id and DEVICE_ID.fullmatch(cabinet_id):
        return RedirectResponse(f"/cabinets/{quote(cabinet_id)}?done=bank.eject_sent", status_code=303)
    return RedirectResponse(f"/banks/{quote(bank_id)}?done=bank.eject_sent", status_code=303)


@router.post("/banks/{bank_id}/state")
async def set_state(request: Request, bank_id: DeviceId, console: ConsoleDep, staff: Maintainer) -> Response:
    form = await read_form(request, staff.csrf_token)
    body = {"state": form.get("state", ""), "reason": form.get("reason", "").strip()}
    await console.backend.post(
        f"{console.backend.services.device}/v1/ops/banks/{bank_id}/state", staff.access_token, body
    )
    return RedirectResponse(f"/banks/{quote(bank_id)}?done=done", status_code=303)


@router.post("/cabinets/{cabinet_id}/light")
async def light(request: Request, cabinet_id: DeviceId, console: ConsoleDep, staff: Maintainer) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.device}/v1/ops/cabinets/{cabinet_id}/light", staff.access_token, {"on": True}
    )
    return RedirectResponse(f"/cabinets/{quote(cabinet_id)}?done=done", status_code=303)


@router.post("/devices/{device_id}/rotate", response_class=HTMLResponse)
async def rotate(request: Request, device_id: DeviceId, console: ConsoleDep, staff: Provisioner) -> HTMLResponse:
    """The new password is shown once, on this answer (never in a URL)."""
    await read_form(request, staff.csrf_token)
    credential = await console.backend.post(
        f"{console.backend.services.device}/v1/admin/devices/{device_id}/credentials/rotate", staff.access_token
    )
    return render(request, "rotated.html", staff, device_id=device_id, password=credential["password"])


@router.get("/alarms", response_class=HTMLResponse)
async def alarms_page(
    request: Request, console: ConsoleDep, staff: Annotated[StaffSession, Depends(page_permission("nav.alarms"))]
) -> HTMLResponse:
    alarms = await console.backend.get(
        f"{console.backend.services.device}/v1/ops/alarms", staff.access_token, limit=1000
    )
    return render(request, "alarms.html", staff, alarms=alarms["items"], resolvable=RESOLVABLE_ALARMS)


@router.post("/alarms/resolve")
async def resolve_alarm(request: Request, console: ConsoleDep, staff: Maintainer) -> Response:
    form = await read_form(request, staff.csrf_token)
    body = {"device_id": form.get("device_id", ""), "kind": form.get("kind", ""), "note": form.get("note", "").strip()}
    await console.backend.post(f"{console.backend.services.device}/v1/ops/alarms/resolve", staff.access_token, body)
    return RedirectResponse("/alarms?done=alarm.resolved", status_code=303)
