"""Disputes and corrections (billing-svc, `rentals:support`): the dispute queue, one rental with its
corrections, and a correction in two steps: the form shows what would change (the fee before and
after, what would go back to the user), and only the confirmation sends it, with an Idempotency-Key
made for that confirmation so a resent confirmation corrects once. A dispute is resolved by a
correction that names it, or rejected with a note. billing-svc audits every correction."""

import secrets
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import Console, ConsoleDep, FormInvalid, form_fen, page_permission, read_form, render, require

router = APIRouter()
Support = Annotated[StaffSession, Depends(page_permission("nav.disputes"))]
RentalReader = Annotated[StaffSession, Depends(require("rentals:read"))]
FINISHED = ("settled", "unpaid")


async def _rental(console: Console, staff: StaffSession, rental_id: UUID) -> dict[str, Any]:
    found: dict[str, Any] = await console.backend.get(
        f"{console.backend.services.billing}/v1/admin/rentals/{rental_id}", staff.access_token
    )
    return found


async def _open_dispute(console: Console, staff: StaffSession, rental_id: UUID) -> dict[str, Any] | None:
    listed = await console.backend.get(
        f"{console.backend.services.billing}/v1/admin/disputes", staff.access_token, state="open", limit=200
    )
    return next((d for d in listed["items"] if d["rental_id"] == str(rental_id)), None)


@router.get("/disputes", response_class=HTMLResponse)
async def disputes(
    request: Request,
    console: ConsoleDep,
    staff: Support,
    state: Annotated[str, Query(pattern="^(open|resolved|rejected)$")] = "open",
) -> HTMLResponse:
    listed = await console.backend.get(
        f"{console.backend.services.billing}/v1/admin/disputes", staff.access_token, state=state, limit=200
    )
    return render(request, "disputes.html", staff, disputes=listed["items"], state=state)


@router.get("/rentals/{rental_id}", response_class=HTMLResponse)
async def rental(request: Request, rental_id: UUID, console: ConsoleDep, staff: RentalReader) -> HTMLResponse:
    found = await _rental(console, staff, rental_id)
    corrections: list[dict[str, Any]] = []
    dispute = None
    if staff.can("rentals:support"):
        s = console.backend.services
        listed = await console.backend.get(f"{s.billing}/v1/admin/rentals/{rental_id}/corrections", staff.access_token)
        corrections = listed["items"]
        dispute = await _open_dispute(console, staff, rental_id)
    return render(request, "rental.html", staff, rental=found, corrections=corrections, dispute=dispute)


def _correction(form: dict[str, str], rental: dict[str, Any], console: Console) -> dict[str, Any]:
    """The correction the form asks for: an active rental ends at a time (typed in the operator's zone),
    a finished one gets a lower fee (typed in yuan)."""
    note = form.get("note", "").strip()
    if not note:
        raise FormInvalid("note", "")
    body: dict[str, Any] = {"note": note}
    if form.get("dispute_id"):
        try:
            body["dispute_id"] = str(UUID(form["dispute_id"]))
        except ValueError:
            raise FormInvalid("dispute_id", form["dispute_id"]) from None
    if rental["state"] == "active":
        typed = form.get("ended_at", "").strip()
        try:
            body["ended_at"] = datetime.fromisoformat(typed).replace(tzinfo=console.zone).isoformat()
        except ValueError:
            raise FormInvalid("ended_at", typed) from None
    else:
        body["fee_fen"] = form_fen(form, "fee")
    return body


@router.post("/rentals/{rental_id}/correction", response_class=HTMLResponse)
async def preview(request: Request, rental_id: UUID, console: ConsoleDep, staff: Support) -> HTMLResponse:
    """Step one: nothing is sent; the page says what would change and asks for confirmation."""
    form = await read_form(request, staff.csrf_token)
    found = await _rental(console, staff, rental_id)
    body = _correction(form, found, console)
    back = None
    if "fee_fen" in body:
        back = max(0, (found.get("paid_fen") or 0) - body["fee_fen"])
    return render(
        request,
        "correction_confirm.html",
        staff,
        rental=found,
        body=body,
        form=form,
        refund_fen=back,
        correction_key=secrets.token_urlsafe(16),
    )


@router.post("/rentals/{rental_id}/correction/confirm")
async def confirm(request: Request, rental_id: UUID, console: ConsoleDep, staff: Support) -> Response:
    form = await read_form(request, staff.csrf_token)
    found = await _rental(console, staff, rental_id)
    key = form.get("correction_key", "")
    if not 16 <= len(key) <= 64 or not key.replace("-", "").replace("_", "").isalnum():
        raise FormInvalid("correction_key", key)
    await console.backend.call(
        "POST",
        f"{console.backend.services.billing}/v1/admin/rentals/{rental_id}/corrections",
        token=staff.access_token,
        json=_correction(form, found, console),
        headers={"Idempotency-Key": f"console-{staff.admin_id}-{key}"},
    )
    return RedirectResponse(f"/rentals/{rental_id}?done=rental.corrected", status_code=303)


@router.post("/disputes/{dispute_id}/reject")
async def reject(request: Request, dispute_id: UUID, console: ConsoleDep, staff: Support) -> Response:
    form = await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.billing}/v1/admin/disputes/{dispute_id}/reject",
        staff.access_token,
        {"note": form.get("note", "").strip()},
    )
    return RedirectResponse("/disputes?done=dispute.rejected_done", status_code=303)
