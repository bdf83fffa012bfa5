"""Value-added services (notify-svc `/v1/admin/value-added-services`, `vas:manage`): the catalogue (kind,
provider, price, the current risk notice, retired or not), a new service, a new version of its risk notice
(earlier consents stop counting as current), retirement with a confirmation, and the consent records: who
accepted or withdrew which notice version when."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.formatting import fen_of
from console.sessions import StaffSession
from console.web import ConsoleDep, FormInvalid, page_permission, read_form, render

router = APIRouter()
Manager = Annotated[StaffSession, Depends(page_permission("nav.vas"))]
Code = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{2,39}$")]
KINDS = ("add_on", "partner_offer", "advertising")


@router.get("/vas", response_class=HTMLResponse)
async def catalogue(request: Request, console: ConsoleDep, staff: Manager) -> HTMLResponse:
    found = await console.backend.get(
        f"{console.backend.services.notify}/v1/admin/value-added-services", staff.access_token
    )
    return render(request, "vas.html", staff, services=found["items"], kinds=KINDS)


@router.post("/vas")
async def create(request: Request, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    kind = form.get("kind", "")
    if kind not in KINDS:
        raise FormInvalid("kind", kind)
    body: dict[str, Any] = {k: form.get(k, "").strip() for k in ("code", "name", "description", "provider")} | {
        "kind": kind
    }
    price = form.get("price", "").strip()
    if price:
        try:
            body["price_fen"] = fen_of(price)
        except ValueError:
            raise FormInvalid("price", price) from None
    created = await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/value-added-services", staff.access_token, body
    )
    return RedirectResponse(f"/vas/{created['code']}?done=vas.created", status_code=303)


@router.get("/vas/{code}", response_class=HTMLResponse)
async def one(request: Request, code: Code, console: ConsoleDep, staff: Manager) -> HTMLResponse:
    base = f"{console.backend.services.notify}/v1/admin/value-added-services"
    found = await console.backend.get(base, staff.access_token)
    service = next((s for s in found["items"] if s["code"] == code), None)
    if service is None:
        raise FormInvalid("code", code)
    consents = await console.backend.get(f"{base}/{code}/consents", staff.access_token, limit=100)
    return render(request, "vas_service.html", staff, service=service, consents=consents["items"])


@router.post("/vas/{code}/risk-notices")
async def publish_notice(request: Request, code: Code, console: ConsoleDep, staff: Manager) -> Response:
    form = await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/value-added-services/{code}/risk-notices",
        staff.access_token,
        {"text": form.get("text", "")},
    )
    return RedirectResponse(f"/vas/{code}?done=vas.notice_published", status_code=303)


@router.post("/vas/{code}/retire")
async def retire(request: Request, code: Code, console: ConsoleDep, staff: Manager) -> Response:
    await read_form(request, staff.csrf_token)
    await console.backend.post(
        f"{console.backend.services.notify}/v1/admin/value-added-services/{code}/retire", staff.access_token
    )
    return RedirectResponse(f"/vas/{code}?done=vas.retired", status_code=303)
