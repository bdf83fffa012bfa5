"""Users (user-svc's administration API): search, a user's view, block and unblock with a reason; the
audit log of every administrative action. user-svc masks phone numbers, e-mail and names; a role with
`users:pii` may reveal one user's (audited by user-svc). The user's view gathers what support needs
from each service, each part only for a role the owning service would answer: rentals (billing,
`rentals:read`), wallet and movements (asset-credit, `ledger:read`), credit history (asset-credit,
`credit:adjust`), tickets and the inbox (notify, `tickets:read`)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.backend import BackendError
from console.sessions import StaffSession
from console.web import ConsoleDep, FormInvalid, page_permission, read_form, render, require

router = APIRouter()
Reader = Annotated[StaffSession, Depends(page_permission("nav.users"))]
Blocker = Annotated[StaffSession, Depends(require("users:block"))]
Refunder = Annotated[StaffSession, Depends(require("payments:refund"))]
AuditReader = Annotated[StaffSession, Depends(page_permission("nav.audit"))]
PHONE_VISIBLE_PERMISSION = "users:block"
PII_PERMISSION = "users:pii"
SECTIONS = {
    "rentals": "rentals:read",
    "wallet": "ledger:read",
    "credit": "credit:adjust",
    "tickets": "tickets:read",
    "messages": "tickets:read",
    "vas": "ledger:read",
}


@router.get("/users", response_class=HTMLResponse)
async def users(
    request: Request,
    console: ConsoleDep,
    staff: Reader,
    q: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(pattern="^(|active|blocked)$")] = "",
) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.user}/v1/admin/users",
        staff.access_token,
        q=q.strip() or None,
        status=status or None,
    )
    return render(
        request, "users.html", staff, users=found, q=q, status=status, see_phone=staff.can(PHONE_VISIBLE_PERMISSION)
    )


async def _section(permitted: bool, call: Callable[[], Awaitable[Any]]) -> dict[str, Any] | None:
    """One part of the user's view: None when the role may not see it, an error when its service failed
    (the rest of the page still shows)."""
    if not permitted:
        return None
    try:
        return {"data": await call(), "error": ""}
    except BackendError as exc:
        return {"data": None, "error": f"{exc.code}: {exc.detail}"}


@router.get("/users/{user_id}", response_class=HTMLResponse)
async def user(
    request: Request, user_id: UUID, console: ConsoleDep, staff: Reader, reveal: bool = False
) -> HTMLResponse:
    s, b, token = console.backend.services, console.backend, staff.access_token
    reveal = reveal and staff.can(PII_PERMISSION)
    found = await b.get(f"{s.user}/v1/admin/users/{user_id}", token, reveal="true" if reveal else None)
    rentals, wallet, credit, tickets, messages, vas = await asyncio.gather(
        _section(
            staff.can(SECTIONS["rentals"]),
            lambda: b.get(f"{s.billing}/v1/admin/users/{user_id}/rentals", token, limit=20),
        ),
        _section(
            staff.can(SECTIONS["wallet"]), lambda: b.get(f"{s.asset}/v1/admin/users/{user_id}/wallet", token, limit=20)
        ),
        _section(staff.can(SECTIONS["credit"]), lambda: b.get(f"{s.asset}/v1/admin/credit/{user_id}", token)),
        _section(
            staff.can(SECTIONS["tickets"]), lambda: b.get(f"{s.notify}/v1/admin/tickets", token, user_id=str(user_id))
        ),
        _section(
            staff.can(SECTIONS["messages"]),
            lambda: b.get(f"{s.notify}/v1/admin/users/{user_id}/messages", token, limit=20),
        ),
        _section(staff.can(SECTIONS["vas"]), lambda: b.get(f"{s.asset}/v1/admin/users/{user_id}/vas-charges", token)),
    )
    return render(
        request,
        "user.html",
        staff,
        user=found,
        rentals=rentals,
        wallet=wallet,
        credit=credit,
        tickets=tickets,
        messages=messages,
        vas=vas,
        revealed=reveal,
        see_phone=staff.can(PHONE_VISIBLE_PERMISSION),
    )


@router.post("/vas-charges/{consent_id}/refund")
async def refund_vas_fee(
    request: Request,
    consent_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    console: ConsoleDep,
    staff: Refunder,
) -> Response:
    """A settled value-added service fee back to the user's balance, once (asset-credit refuses a second)."""
    form = await read_form(request, staff.csrf_token)
    try:
        user_id = UUID(form.get("user_id", ""))
    except ValueError:
        raise FormInvalid("user_id", form.get("user_id", "")) from None
    await console.backend.post(
        f"{console.backend.services.asset}/v1/admin/vas-charges/{consent_id}/refund",
        staff.access_token,
        {"reason": form.get("reason", "").strip()},
    )
    return RedirectResponse(f"/users/{user_id}?done=vas.refunded#vas", status_code=303)


@router.post("/users/{user_id}/{action}")
async def block_or_unblock(
    request: Request, user_id: UUID, action: str, console: ConsoleDep, staff: Blocker
) -> Response:
    form = await read_form(request, staff.csrf_token)
    if action not in ("block", "unblock"):
        return RedirectResponse(f"/users/{user_id}", status_code=303)
    await console.backend.post(
        f"{console.backend.services.user}/v1/admin/users/{user_id}/{action}",
        staff.access_token,
        {"reason": form.get("reason", "").strip()},
    )
    return RedirectResponse(f"/users/{user_id}?done=done", status_code=303)


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    console: ConsoleDep,
    staff: AuditReader,
    action: Annotated[str, Query(max_length=60)] = "",
    target_id: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    # The platform-wide trail (every service's staff actions, hash-chained by user-svc), not user-svc's own log.
    rows = await console.backend.get(
        f"{console.backend.services.user}/v1/admin/audit-trail",
        staff.access_token,
        action=action.strip() or None,
        target_id=target_id.strip() or None,
        limit=200,
    )
    return render(request, "audit.html", staff, rows=rows, action=action, target_id=target_id)
