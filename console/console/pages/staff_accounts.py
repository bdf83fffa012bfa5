"""Staff accounts (user-svc `/v1/admin/admins/*`, `admins:manage`): list and filter, create with a
role (the first sign-in replaces the chosen password unless told otherwise), change the role, disable
and enable, reset the password (a one-time password shown once) or the second factor, see and end a
staff member's sessions. user-svc audits each change and ends the sessions it affects."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import ConsoleDep, page_permission, read_form, render
from kit.auth import ROLE_PERMISSIONS

router = APIRouter()
Manager = Annotated[StaffSession, Depends(page_permission("nav.staff"))]
ROLES = tuple(ROLE_PERMISSIONS)
REASONED_ACTIONS = ("disable", "enable", "totp-reset")


async def _detail(
    request: Request, console: ConsoleDep, staff: StaffSession, admin_id: UUID, **extra: Any
) -> HTMLResponse:
    s = console.backend.services
    account = await console.backend.get(f"{s.user}/v1/admin/admins/{admin_id}", staff.access_token)
    sessions = await console.backend.get(f"{s.user}/v1/admin/admins/{admin_id}/sessions", staff.access_token)
    return render(
        request,
        "staff_member.html",
        staff,
        account=account,
        sessions=sessions,
        roles=ROLES,
        temporary_password=extra.get("temporary_password", ""),
    )


@router.get("/staff", response_class=HTMLResponse)
async def staff_list(
    request: Request,
    console: ConsoleDep,
    staff: Manager,
    status: Annotated[str, Query(pattern="^(|active|disabled)$")] = "",
    role: Annotated[str, Query(pattern="^[a-z_]{0,40}$")] = "",
) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.user}/v1/admin/admins",
        staff.access_token,
        status=status or None,
        role=role or None,
        limit=200,
    )
    return render(request, "staff.html", staff, accounts=found, status=status, role=role, roles=ROLES)


@router.post("/staff")
async def create(request: Request, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    created = await console.backend.post(
        f"{console.backend.services.user}/v1/admin/admins",
        staff.access_token,
        {
            "login": form.get("login", "").strip(),
            "password": form.get("password", ""),
            "role": form.get("role", ""),
            "must_change_password": form.get("must_change_password") == "true",
        },
    )
    return RedirectResponse(f"/staff/{created['admin_id']}?done=staff.created_done", status_code=303)


@router.get("/staff/{admin_id}", response_class=HTMLResponse)
async def member(request: Request, admin_id: UUID, console: ConsoleDep, staff: Manager) -> HTMLResponse:
    return await _detail(request, console, staff, admin_id)


@router.post("/staff/{admin_id}/role")
async def change_role(request: Request, admin_id: UUID, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    await console.backend.call(
        "PUT",
        f"{console.backend.services.user}/v1/admin/admins/{admin_id}/role",
        token=staff.access_token,
        json={"role": form.get("role", ""), "reason": form.get("reason", "").strip()},
    )
    return RedirectResponse(f"/staff/{admin_id}?done=staff.changed", status_code=303)


@router.post("/staff/{admin_id}/password-reset", response_class=HTMLResponse)
async def reset_password(request: Request, admin_id: UUID, console: ConsoleDep, staff: Manager) -> HTMLResponse:
    """The one-time password is shown on this answer only (never in a URL, never stored here)."""
    form = await read_form(request, staff.csrf_token)
    reset = await console.backend.post(
        f"{console.backend.services.user}/v1/admin/admins/{admin_id}/password-reset",
        staff.access_token,
        {"reason": form.get("reason", "").strip()},
    )
    return await _detail(request, console, staff, admin_id, temporary_password=reset["temporary_password"])


@router.post("/staff/{admin_id}/sessions/{session_id}/revoke")
async def revoke_session(
    request: Request, admin_id: UUID, session_id: UUID, console: ConsoleDep, staff: Manager
) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.call(
        "DELETE",
        f"{console.backend.services.user}/v1/admin/admins/{admin_id}/sessions/{session_id}",
        token=staff.access_token,
    )
    return RedirectResponse(f"/staff/{admin_id}?done=staff.changed", status_code=303)


@router.post("/staff/{admin_id}/{action}")
async def with_reason(request: Request, admin_id: UUID, action: str, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    if action not in REASONED_ACTIONS:
        return RedirectResponse(f"/staff/{admin_id}", status_code=303)
    await console.backend.post(
        f"{console.backend.services.user}/v1/admin/admins/{admin_id}/{action}",
        staff.access_token,
        {"reason": form.get("reason", "").strip()},
    )
    return RedirectResponse(f"/staff/{admin_id}?done=staff.changed", status_code=303)
