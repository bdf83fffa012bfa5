"""Support tickets (notify-svc's staff API): the queue, a ticket with its thread, reply (the user gets
it in their inbox and as a push), assign to oneself, resolve."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import ConsoleDep, page_permission, read_form, render, require

router = APIRouter()
Reader = Annotated[StaffSession, Depends(page_permission("nav.tickets"))]
Manager = Annotated[StaffSession, Depends(require("tickets:manage"))]
OPEN = ("new", "assigned", "waiting_user", "reopened")


@router.get("/tickets", response_class=HTMLResponse)
async def queue(
    request: Request,
    console: ConsoleDep,
    staff: Reader,
    q: Annotated[str, Query(max_length=100)] = "",
    scope: Annotated[str, Query(pattern="^(open|all)$")] = "open",
    user_id: UUID | None = None,
) -> HTMLResponse:
    params: list[tuple[str, object]] = [("limit", 100)]
    if scope == "open":
        params += [("status", s) for s in OPEN]
    if q.strip():
        params.append(("q", q.strip()))
    if user_id:
        params.append(("user_id", str(user_id)))
    page = await console.backend.call(
        "GET", f"{console.backend.services.notify}/v1/admin/tickets", token=staff.access_token, params=params
    )
    return render(request, "tickets.html", staff, tickets=page["items"], q=q, scope=scope)


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
async def ticket(request: Request, ticket_id: UUID, console: ConsoleDep, staff: Reader) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.notify}/v1/admin/tickets/{ticket_id}", staff.access_token
    )
    return render(request, "ticket.html", staff, ticket=found)


@router.post("/tickets/{ticket_id}/reply")
async def reply(request: Request, ticket_id: UUID, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    text = form.get("text", "").strip()
    internal = form.get("internal") == "1"
    base = f"{console.backend.services.notify}/v1/admin/tickets/{ticket_id}"
    if internal:
        await console.backend.post(f"{base}/notes", staff.access_token, {"text": text})
    else:
        await console.backend.post(f"{base}/replies", staff.access_token, {"text": text})
    return RedirectResponse(f"/tickets/{ticket_id}?done=done", status_code=303)


@router.post("/tickets/{ticket_id}/assign")
async def assign(request: Request, ticket_id: UUID, console: ConsoleDep, staff: Manager) -> Response:
    await read_form(request, staff.csrf_token)
    base = f"{console.backend.services.notify}/v1/admin/tickets/{ticket_id}"
    await console.backend.post(f"{base}/assign", staff.access_token, {"assignee": staff.login})
    return RedirectResponse(f"/tickets/{ticket_id}?done=done", status_code=303)


@router.post("/tickets/{ticket_id}/resolve")
async def resolve(request: Request, ticket_id: UUID, console: ConsoleDep, staff: Manager) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/tickets/{ticket_id}/resolve", staff.access_token
    )
    return RedirectResponse(f"/tickets/{ticket_id}?done=done", status_code=303)
