"""Maintenance tasks (device-svc `/v1/ops/tasks`): the queue, one task with its history, and the
moves its lifecycle allows: dispatchers assign (to themselves or a staff member) and cancel with a
reason, field staff start and finish with a note. device-svc records who did what in the history."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import Console, ConsoleDep, page_permission, read_form, render, require
from kit.auth import ALL_PERMISSIONS, ROLE_PERMISSIONS

router = APIRouter()

Reader = Annotated[StaffSession, Depends(page_permission("nav.tasks"))]
FieldStaff = Annotated[StaffSession, Depends(require("devices:maintain"))]
Dispatcher = Annotated[StaffSession, Depends(require("maintenance:dispatch"))]
OPEN_STATUSES = ("open", "assigned", "in_progress")
STATUSES = (*OPEN_STATUSES, "done", "cancelled")
# Whom a task can go to: the roles that may start and finish one.
WORKER_ROLES = tuple(r for r, p in ROLE_PERMISSIONS.items() if "devices:maintain" in p or ALL_PERMISSIONS in p)


async def staff_directory(console: Console, staff: StaffSession) -> list[dict[str, str]]:
    """Active staff who can work a task (user-svc's directory: dispatchers only; others get none)."""
    if not staff.can("maintenance:dispatch"):
        return []
    found: list[dict[str, str]] = await console.backend.call(
        "GET",
        f"{console.backend.services.user}/v1/admin/staff-directory",
        token=staff.access_token,
        params=[("role", r) for r in WORKER_ROLES],
    )
    return found


@router.get("/tasks", response_class=HTMLResponse)
async def queue(
    request: Request,
    console: ConsoleDep,
    staff: Reader,
    status: Annotated[str, Query(pattern="^(|open|assigned|in_progress|done|cancelled)$")] = "",
    mine: bool = False,
    device_id: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """Open tasks oldest first (or one status), optionally only the signed-in staff member's."""
    params: list[tuple[str, str | int]] = [("status", s) for s in ((status,) if status else OPEN_STATUSES)]
    if mine:
        params.append(("assignee", staff.admin_id))
    if device_id.strip():
        params.append(("device_id", device_id.strip()))
    params.append(("limit", 500))
    found = await console.backend.call(
        "GET", f"{console.backend.services.device}/v1/ops/tasks", token=staff.access_token, params=params
    )
    names = {a["admin_id"]: a["login"] for a in await staff_directory(console, staff)}
    return render(
        request,
        "tasks.html",
        staff,
        tasks=found["items"],
        names=names,
        status=status,
        statuses=STATUSES,
        mine=mine,
        device_id=device_id,
    )


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: uuid.UUID, console: ConsoleDep, staff: Reader) -> HTMLResponse:
    task = await console.backend.get(f"{console.backend.services.device}/v1/ops/tasks/{task_id}", staff.access_token)
    directory = await staff_directory(console, staff)
    names = {a["admin_id"]: a["login"] for a in directory}
    return render(request, "task.html", staff, task=task, directory=directory, names=names)


async def _move(
    console: ConsoleDep, staff: StaffSession, task_id: uuid.UUID, action: str, body: dict[str, str]
) -> Response:
    await console.backend.post(
        f"{console.backend.services.device}/v1/ops/tasks/{task_id}/{action}", staff.access_token, body
    )
    return RedirectResponse(f"/tasks/{task_id}?done=task.moved", status_code=303)


@router.post("/tasks/{task_id}/assign")
async def assign(request: Request, task_id: uuid.UUID, console: ConsoleDep, staff: Dispatcher) -> Response:
    form = await read_form(request, staff.csrf_token)
    assignee = form.get("assignee", "").strip() or staff.admin_id
    return await _move(console, staff, task_id, "assign", {"assignee": assignee, "note": form.get("note", "").strip()})


@router.post("/tasks/{task_id}/start")
async def start(request: Request, task_id: uuid.UUID, console: ConsoleDep, staff: FieldStaff) -> Response:
    form = await read_form(request, staff.csrf_token)
    return await _move(console, staff, task_id, "start", {"note": form.get("note", "").strip()})


@router.post("/tasks/{task_id}/done")
async def done(request: Request, task_id: uuid.UUID, console: ConsoleDep, staff: FieldStaff) -> Response:
    form = await read_form(request, staff.csrf_token)
    return await _move(console, staff, task_id, "done", {"note": form.get("note", "").strip()})


@router.post("/tasks/{task_id}/cancel")
async def cancel(request: Request, task_id: uuid.UUID, console: ConsoleDep, staff: Dispatcher) -> Response:
    form = await read_form(request, staff.csrf_token)
    return await _move(console, staff, task_id, "cancel", {"note": form.get("note", "").strip()})
