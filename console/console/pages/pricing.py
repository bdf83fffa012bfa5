"""Pricing plans (billing-svc `/v1/admin/pricing-plans`, `pricing:manage`): the default plan and the
plans for a region or a cabinet, create, change (for rentals borrowed from then on), retire and bring
back. Money is typed in yuan and sent in fen; billing-svc checks the bounds and records who changed
what."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.backend import BackendError
from console.sessions import StaffSession
from console.web import Console, ConsoleDep, FormInvalid, form_fen, form_int, page_permission, read_form, render

router = APIRouter()
Pricer = Annotated[StaffSession, Depends(page_permission("nav.pricing"))]
SCOPES = ("default", "region", "cabinet")


async def _plans(console: Console, staff: StaffSession) -> list[dict[str, Any]]:
    found = await console.backend.get(
        f"{console.backend.services.billing}/v1/admin/pricing-plans", staff.access_token, include_inactive="true"
    )
    plans: list[dict[str, Any]] = found["items"]
    return plans


def _terms(form: dict[str, str]) -> dict[str, Any]:
    return {
        "name": form.get("name", "").strip(),
        "period_minutes": form_int(form, "period_minutes"),
        "price_per_period_fen": form_fen(form, "price_per_period"),
        "free_minutes": form_int(form, "free_minutes"),
        "daily_cap_fen": form_fen(form, "daily_cap"),
        "purchase_ceiling_fen": form_fen(form, "purchase_ceiling"),
    }


@router.get("/pricing", response_class=HTMLResponse)
async def plans(request: Request, console: ConsoleDep, staff: Pricer) -> HTMLResponse:
    return render(request, "pricing.html", staff, plans=await _plans(console, staff), scopes=SCOPES)


@router.post("/pricing")
async def create(request: Request, console: ConsoleDep, staff: Pricer) -> Response:
    form = await read_form(request, staff.csrf_token)
    scope = form.get("scope", "")
    if scope not in SCOPES:
        raise FormInvalid("scope", scope)
    created = await console.backend.post(
        f"{console.backend.services.billing}/v1/admin/pricing-plans",
        staff.access_token,
        {
            **_terms(form),
            "scope": scope,
            "scope_value": "" if scope == "default" else form.get("scope_value", "").strip(),
        },
    )
    return RedirectResponse(f"/pricing/{created['plan_id']}?done=pricing.saved", status_code=303)


@router.get("/pricing/{plan_id}", response_class=HTMLResponse)
async def plan(request: Request, plan_id: UUID, console: ConsoleDep, staff: Pricer) -> HTMLResponse:
    found = next((p for p in await _plans(console, staff) if p["plan_id"] == str(plan_id)), None)
    if found is None:
        raise BackendError(404, "plan_not_found", str(plan_id))
    return render(request, "pricing_plan.html", staff, plan=found)


async def _patch(console: Console, staff: StaffSession, plan_id: UUID, body: dict[str, Any]) -> Response:
    await console.backend.call(
        "PATCH",
        f"{console.backend.services.billing}/v1/admin/pricing-plans/{plan_id}",
        token=staff.access_token,
        json=body,
    )
    return RedirectResponse(f"/pricing/{plan_id}?done=pricing.saved", status_code=303)


@router.post("/pricing/{plan_id}")
async def change(request: Request, plan_id: UUID, console: ConsoleDep, staff: Pricer) -> Response:
    form = await read_form(request, staff.csrf_token)
    return await _patch(console, staff, plan_id, _terms(form))


@router.post("/pricing/{plan_id}/active")
async def retire_or_restore(request: Request, plan_id: UUID, console: ConsoleDep, staff: Pricer) -> Response:
    form = await read_form(request, staff.csrf_token)
    return await _patch(console, staff, plan_id, {"active": form.get("active") == "true"})
