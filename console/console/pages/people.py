"""Users (user-svc's administration API): search, a user's view, block and unblock with a reason; the
audit log of every administrative action. Phone numbers are masked unless the role may block users
(support and super administrators: they call users back); see docs/console.md."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import ConsoleDep, page_permission, read_form, render, require

router = APIRouter()
Reader = Annotated[StaffSession, Depends(page_permission("nav.users"))]
Blocker = Annotated[StaffSession, Depends(require("users:block"))]
AuditReader = Annotated[StaffSession, Depends(page_permission("nav.audit"))]
PHONE_VISIBLE_PERMISSION = "users:block"


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


@router.get("/users/{user_id}", response_class=HTMLResponse)
async def user(request: Request, user_id: UUID, console: ConsoleDep, staff: Reader) -> HTMLResponse:
    s = console.backend.services
    found = await console.backend.get(f"{s.user}/v1/admin/users/{user_id}", staff.access_token)
    tickets = []
    if staff.can("tickets:read"):
        page = await console.backend.get(f"{s.notify}/v1/admin/tickets", staff.access_token, user_id=str(user_id))
        tickets = page["items"]
    return render(
        request,
        "user.html",
        staff,
        user=found,
        tickets=tickets,
        see_phone=staff.can(PHONE_VISIBLE_PERMISSION),
    )


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
    rows = await console.backend.get(
        f"{console.backend.services.user}/v1/admin/audit-log",
        staff.access_token,
        action=action.strip() or None,
        target_id=target_id.strip() or None,
        limit=200,
    )
    return render(request, "audit.html", staff, rows=rows, action=action, target_id=target_id)
