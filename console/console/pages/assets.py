"""Coupons, red packets and cards of free minutes (asset-credit-svc `/v1/admin/asset-templates` and
`/v1/admin/assets`, `assets:manage`): the templates, create one, stop issuing it, issue it to users
and see what was issued. Issuing carries an Idempotency-Key made when the form was shown, so a form
sent twice issues once."""

import re
import secrets
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.backend import BackendError
from console.sessions import StaffSession
from console.web import Console, ConsoleDep, FormInvalid, form_fen, form_int, page_permission, read_form, render

router = APIRouter()
AssetManager = Annotated[StaffSession, Depends(page_permission("nav.coupons"))]
KINDS = ("coupon", "red_packet", "card")
UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_ISSUE = 1000


async def _templates(console: Console, staff: StaffSession, kind: str = "") -> list[dict[str, Any]]:
    found = await console.backend.get(
        f"{console.backend.services.asset}/v1/admin/asset-templates", staff.access_token, kind=kind or None, limit=500
    )
    templates: list[dict[str, Any]] = found["items"]
    return templates


@router.get("/coupons", response_class=HTMLResponse)
async def templates(
    request: Request,
    console: ConsoleDep,
    staff: AssetManager,
    kind: Annotated[str, Query(pattern="^(|coupon|red_packet|card)$")] = "",
) -> HTMLResponse:
    return render(
        request, "coupons.html", staff, templates=await _templates(console, staff, kind), kind=kind, kinds=KINDS
    )


@router.post("/coupons")
async def create(request: Request, console: ConsoleDep, staff: AssetManager) -> Response:
    form = await read_form(request, staff.csrf_token)
    kind = form.get("kind", "")
    if kind not in KINDS:
        raise FormInvalid("kind", kind)
    body: dict[str, Any] = {
        "kind": kind,
        "name": form.get("name", "").strip(),
        "min_spend_fen": form_fen(form, "min_spend", optional=True) or 0,
        "valid_days": form_int(form, "valid_days"),
    }
    if kind == "coupon":
        body["amount_off_fen"] = form_fen(form, "amount_off", optional=True)
        body["percent_off"] = form_int(form, "percent_off", optional=True)
        body["max_discount_fen"] = form_fen(form, "max_discount", optional=True)
    elif kind == "red_packet":
        body["amount_fen"] = form_fen(form, "amount")
    else:
        body["card_minutes"] = form_int(form, "card_minutes")
        body["price_fen"] = form_fen(form, "price", optional=True)
    created = await console.backend.post(
        f"{console.backend.services.asset}/v1/admin/asset-templates",
        staff.access_token,
        {k: v for k, v in body.items() if v is not None},
    )
    return RedirectResponse(f"/coupons/{created['template_id']}?done=coupon.saved", status_code=303)


@router.get("/coupons/{template_id}", response_class=HTMLResponse)
async def template(request: Request, template_id: UUID, console: ConsoleDep, staff: AssetManager) -> HTMLResponse:
    found = next((t for t in await _templates(console, staff) if t["template_id"] == str(template_id)), None)
    if found is None:
        raise BackendError(404, "asset_template_not_found", str(template_id))
    issued = await console.backend.get(
        f"{console.backend.services.asset}/v1/admin/assets",
        staff.access_token,
        template_id=str(template_id),
        limit=200,
    )
    return render(
        request,
        "coupon.html",
        staff,
        tpl=found,
        assets=issued["items"],
        issue_key=secrets.token_urlsafe(16),
    )


@router.post("/coupons/{template_id}/issue")
async def issue(request: Request, template_id: UUID, console: ConsoleDep, staff: AssetManager) -> Response:
    form = await read_form(request, staff.csrf_token)
    user_ids = list(dict.fromkeys(m.lower() for m in UUID_TEXT.findall(form.get("user_ids", ""))))
    if not user_ids or len(user_ids) > MAX_ISSUE:
        raise FormInvalid("user_ids", f"{len(user_ids)} user ids (1 to {MAX_ISSUE})")
    key = form.get("issue_key", "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", key):
        raise FormInvalid("issue_key", key)
    await console.backend.call(
        "POST",
        f"{console.backend.services.asset}/v1/admin/asset-templates/{template_id}/issues",
        token=staff.access_token,
        json={"user_ids": user_ids},
        headers={"Idempotency-Key": f"console-{staff.admin_id}-{key}"[:150]},
    )
    return RedirectResponse(f"/coupons/{template_id}?done=coupon.issued_done", status_code=303)


@router.post("/coupons/{template_id}/deactivate")
async def deactivate(request: Request, template_id: UUID, console: ConsoleDep, staff: AssetManager) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.asset}/v1/admin/asset-templates/{template_id}/deactivate", staff.access_token
    )
    return RedirectResponse(f"/coupons/{template_id}?done=coupon.saved", status_code=303)
