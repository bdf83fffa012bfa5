"""The signed-in staff member's own account (user-svc `/v1/admin/me/*`): change the password and enrol
the second factor (TOTP). A sign-in with something pending (a password chosen by someone else, a
factor the role requires) reaches only this page until it is done. Both changes end every session of
the account in user-svc, so the console ends this one too and asks for a new sign-in."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import qr
from console.backend import BackendError
from console.sessions import COOKIE, StaffSession
from console.web import Console, ConsoleDep, Staff, read_form, render

router = APIRouter()


async def _page(
    request: Request, console: Console, staff: StaffSession, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    me = await console.backend.get(f"{console.backend.services.user}/v1/admin/me", staff.access_token)
    values: dict[str, Any] = {"enrolment": None, "confirming": False, "error_key": "", "error_detail": ""}
    values.update(context)
    return render(request, "account.html", staff, status_code=status_code, me=me, **values)


async def _signed_out_for_good(console: Console, staff: StaffSession) -> Response:
    await console.store.end(staff.session_id)
    response = RedirectResponse("/login?again=1", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/account", response_class=HTMLResponse)
async def account(request: Request, console: ConsoleDep, staff: Staff) -> HTMLResponse:
    return await _page(request, console, staff)


@router.post("/account/password")
async def change_password(request: Request, console: ConsoleDep, staff: Staff) -> Response:
    form = await read_form(request, staff.csrf_token)
    new = form.get("new_password", "")
    if new != form.get("repeat_password", ""):
        return await _page(request, console, staff, status_code=422, error_key="account.mismatch")
    try:
        await console.backend.post(
            f"{console.backend.services.user}/v1/admin/me/password",
            staff.access_token,
            {"current_password": form.get("current_password", ""), "new_password": new},
        )
    except BackendError as exc:
        if exc.status not in (401, 422) or exc.code == "token_revoked":
            raise
        key = "account.wrong_password" if exc.status == 401 else "account.weak_password"
        return await _page(request, console, staff, status_code=exc.status, error_key=key, error_detail=exc.detail)
    return await _signed_out_for_good(console, staff)


@router.post("/account/totp")
async def begin_totp(request: Request, console: ConsoleDep, staff: Staff) -> Response:
    await read_form(request, staff.csrf_token)
    enrolment = await console.backend.post(f"{console.backend.services.user}/v1/admin/me/totp", staff.access_token)
    secret = str(enrolment["secret"])
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    uri = str(enrolment["provisioning_uri"])
    return await _page(
        request, console, staff, enrolment={"secret": grouped, "uri": uri, "qr": qr.data_uri(uri)}, confirming=True
    )


@router.post("/account/totp/confirm")
async def confirm_totp(request: Request, console: ConsoleDep, staff: Staff) -> Response:
    form = await read_form(request, staff.csrf_token)
    try:
        await console.backend.post(
            f"{console.backend.services.user}/v1/admin/me/totp/confirm",
            staff.access_token,
            {"code": form.get("code", "").strip()},
        )
    except BackendError as exc:
        wrong = exc.code == "totp_code_invalid" or exc.status == 422
        if not wrong and exc.status != 409:
            raise
        return await _page(
            request,
            console,
            staff,
            status_code=422 if wrong else 409,
            confirming=wrong,
            error_key="account.totp_wrong" if wrong else "account.totp_not_pending",
        )
    return await _signed_out_for_good(console, staff)
