"""Notices to every user's inbox (notify-svc `/v1/admin/notices`, `notices:send`): write a draft,
attach images (checked by notify-svc by their content), publish with a confirmation."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.sessions import StaffSession
from console.web import ConsoleDep, FormInvalid, page_permission, read_form, read_upload, render

router = APIRouter()
Sender = Annotated[StaffSession, Depends(page_permission("nav.notices"))]
KINDS = ("operations", "system")
MAX_IMAGE_FORM_BYTES = 17 * 1024 * 1024  # notify-svc refuses an image above its own limit (413)


@router.get("/notices", response_class=HTMLResponse)
async def notices(request: Request, console: ConsoleDep, staff: Sender) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.notify}/v1/admin/notices", staff.access_token, limit=50
    )
    return render(request, "notices.html", staff, notices=found["items"], kinds=KINDS)


@router.post("/notices")
async def create(request: Request, console: ConsoleDep, staff: Sender) -> Response:
    form = await read_form(request, staff.csrf_token)
    kind = form.get("kind", "")
    if kind not in KINDS:
        raise FormInvalid("kind", kind)
    created = await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/notices",
        staff.access_token,
        {"kind": kind, "title": form.get("title", ""), "text": form.get("text", "")},
    )
    return RedirectResponse(f"/notices/{created['notice_id']}?done=notice.saved", status_code=303)


@router.get("/notices/{notice_id}", response_class=HTMLResponse)
async def notice(request: Request, notice_id: UUID, console: ConsoleDep, staff: Sender) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.notify}/v1/admin/notices/{notice_id}", staff.access_token
    )
    return render(request, "notice.html", staff, note=found)


@router.post("/notices/{notice_id}/images")
async def add_image(request: Request, notice_id: UUID, console: ConsoleDep, staff: Sender) -> Response:
    upload = await read_upload(request, staff.csrf_token, MAX_IMAGE_FORM_BYTES)
    image = upload.files.get("image", b"")
    if not image:
        raise FormInvalid("image", "no file chosen")
    await console.backend.call(
        "POST",
        f"{console.backend.services.notify}/v1/admin/notices/{notice_id}/images",
        token=staff.access_token,
        content=image,
        headers={"Content-Type": "application/octet-stream"},
    )
    return RedirectResponse(f"/notices/{notice_id}?done=notice.image_added", status_code=303)


@router.post("/notices/{notice_id}/publish")
async def publish(request: Request, notice_id: UUID, console: ConsoleDep, staff: Sender) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/notices/{notice_id}/publish", staff.access_token
    )
    return RedirectResponse(f"/notices/{notice_id}?done=notice.published_done", status_code=303)
