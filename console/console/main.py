"""The console's app: its own process beside the six services (deploy/local/stack.py starts it on the
stack's port base + 7; see docs/console.md for why it is not mounted in a service)."""

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from console.backend import Backend, BackendError, Services, SessionExpired
from console.pages import (
    account,
    ads,
    assets,
    campaigns,
    dashboard,
    devices,
    disputes,
    finance,
    notices,
    people,
    pricing,
    reconciliation,
    staff_accounts,
    tasks,
    tickets,
    vas,
)
from console.problems import FORM_STATUSES, Problem, status_for
from console.sessions import COOKIE, LOGIN_CSRF_COOKIE, SessionStore
from console.settings import ConsoleSettings
from console.web import (
    AccountPending,
    Console,
    ConsoleDep,
    CsrfRefused,
    FormInvalid,
    NotAllowed,
    SignInRequired,
    Staff,
    console_of,
    form_page,
    read_form,
    render,
    templates_for,
)
from kit.db import make_engine, ping
from kit.httpclient import async_client
from kit.logging import configure_logging

log = logging.getLogger("console")

STATIC = Path(__file__).parent / "static"

# No inline script or style anywhere: every script and stylesheet is a file served from here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SecurityHeaders(BaseHTTPMiddleware):
    """Headers on every answer, and state changes refused when the browser says they come from
    another origin (besides the CSRF token and SameSite=Strict cookies)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method in UNSAFE_METHODS:
            origin = request.headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
                response: Response = HTMLResponse("cross-origin request refused", status_code=403)
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _secure(request: Request, settings: ConsoleSettings) -> bool:
    return settings.force_secure or request.url.scheme == "https"


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    configure_logging("console", settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.console_database_url, pool_size=5)
        try:
            async with async_client(timeout=settings.backend_timeout_s) as http:
                zone = ZoneInfo(settings.console_timezone)
                app.state.console = Console(
                    settings=settings,
                    store=SessionStore(engine, settings.console_idle_timeout_s, settings.console_session_key),
                    backend=Backend(http, Services.from_settings(settings)),
                    templates=templates_for(zone),
                    zone=zone,
                )
                yield
        finally:
            await engine.dispose()

    app = FastAPI(title="Operations console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _: SignInRequired) -> Response:
        if request.headers.get("x-requested-with") == "fetch":
            return JSONResponse({"code": "signed_out"}, status_code=401)
        # A cookie that names no live session: it expired (or the console restarted).
        return RedirectResponse("/login?expired=1" if request.cookies.get(COOKIE) else "/login", status_code=303)

    @app.exception_handler(AccountPending)
    async def account_pending(request: Request, _: AccountPending) -> Response:
        if request.headers.get("x-requested-with") == "fetch":
            return JSONResponse({"code": "account_pending"}, status_code=401)
        return RedirectResponse("/account", status_code=303)

    @app.exception_handler(SessionExpired)
    async def expired(request: Request, _: SessionExpired) -> Response:
        await console_of(request).store.end(request.cookies.get(COOKIE))
        return RedirectResponse("/login?expired=1", status_code=303)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, _: NotAllowed) -> Response:
        staff = await console_of(request).store.peek(request.cookies.get(COOKIE))
        return render(request, "error.html", staff, status_code=403, message_key="forbidden", detail="")

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> Response:
        staff = await console_of(request).store.peek(request.cookies.get(COOKIE))
        return render(request, "error.html", staff, status_code=403, message_key="csrf", detail="")

    @app.exception_handler(FormInvalid)
    async def form_invalid(request: Request, exc: FormInvalid) -> Response:
        return await refused(request, Problem(422, "form_invalid", f"{exc.field}: {exc.value}"))

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> Response:
        return await refused(request, Problem(exc.status, exc.code, exc.detail))

    async def refused(request: Request, problem: Problem) -> Response:
        """A form refused (by a service, or by the console reading it) goes back to the form's page, which
        shows why; a page that cannot be shown says why with the service's status; a service that failed
        is a 502."""
        console = console_of(request)
        staff = await console.store.peek(request.cookies.get(COOKIE))
        if staff is not None and request.method == "POST" and problem.status in FORM_STATUSES:
            back = form_page(request)
            if back is not None:
                posted = getattr(request.state, "form", None) or {}
                await console.store.set_problem(staff.session_id, problem.with_form(request.url.path, posted))
                return RedirectResponse(back, status_code=303)
        status = status_for(problem.status)
        key = "forbidden" if status == 403 else "error.unavailable" if status == 502 else "error.backend"
        request.state.problem = problem
        return render(request, "error.html", staff, status_code=status, message_key=key, detail="")

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(console: ConsoleDep) -> Response:
        """Ready when user-svc (where staff sign in) and the session database answer."""
        try:
            answer = await console.backend.http.get(f"{console.backend.services.user}/livez", timeout=2.0)
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        try:
            await ping(console.store.engine)
            db = True
        except Exception:
            db = False
        ready = ok and db
        return JSONResponse(
            {"status": "ok" if ready else "failing", "user_svc": ok, "database": db}, status_code=200 if ready else 503
        )

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(
        request: Request,
        console: ConsoleDep,
        expired: bool = False,
        out: bool = False,
        again: bool = False,
        lang: Annotated[str | None, Query(pattern="^(zh|en)$")] = None,
    ) -> Response:
        token = secrets.token_urlsafe(32)
        message = "signin.expired" if expired else "signin.out" if out else "signin.again" if again else ""
        response = render(
            request, "login.html", None, lang=lang, login_csrf=token, message_key=message, error_key="", login_name=""
        )
        _login_cookie(response, request, settings, token)
        return response

    @app.post("/login")
    async def login(request: Request, console: ConsoleDep) -> Response:
        form = await read_form(request, request.cookies.get(LOGIN_CSRF_COOKIE, "") or secrets.token_urlsafe(8))
        lang = form.get("lang", "") if form.get("lang") in ("zh", "en") else settings.console_default_lang
        login_name = form.get("login", "").strip()
        credentials = {"login": login_name, "password": form.get("password", "")}
        if form.get("totp_code", "").strip():
            credentials["totp_code"] = form["totp_code"].strip()
        try:
            answer = await console.backend.call(
                "POST", f"{console.backend.services.user}/v1/admin/sessions", json=credentials
            )
        except BackendError as exc:
            token = secrets.token_urlsafe(32)
            error = (
                "signin.locked"
                if exc.status == 429
                else "signin.totp_required"
                if exc.code == "totp_required"
                else "signin.failed"
            )
            status = 429 if exc.status == 429 else 401
            response = render(
                request,
                "login.html",
                None,
                status_code=status,
                lang=lang,
                login_csrf=token,
                message_key="",
                error_key=error,
                login_name=login_name,
            )
            _login_cookie(response, request, settings, token)
            return response
        staff = await console.store.create(
            admin_id=str(answer["admin_id"]),
            login=login_name,
            roles=list(answer["roles"]),
            access_token=str(answer["access_token"]),
            expires_in=int(answer["expires_in"]),
            lang=lang,
            pending=tuple(answer.get("pending") or ()),
            refresh_token=answer.get("refresh_token"),
            refresh_expires_in=int(answer.get("refresh_expires_in") or 0),
        )
        log.info("staff signed in", extra={"admin_id": staff.admin_id, "roles": staff.roles, "pending": staff.pending})
        signed_in = RedirectResponse("/account" if staff.pending else "/", status_code=303)
        signed_in.set_cookie(
            COOKIE,
            staff.session_id,
            httponly=True,
            samesite="strict",
            secure=_secure(request, settings),
            path="/",
        )
        signed_in.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return signed_in

    @app.post("/logout")
    async def logout(request: Request, staff: Staff, console: ConsoleDep) -> Response:
        await read_form(request, staff.csrf_token)
        await console.store.end(staff.session_id)
        response = RedirectResponse("/login?out=1", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.post("/lang")
    async def switch_language(request: Request, staff: Staff, console: ConsoleDep) -> Response:
        form = await read_form(request, staff.csrf_token)
        await console.store.set_lang(staff, "en" if staff.lang == "zh" else "zh")
        back = form.get("back", "/")
        return RedirectResponse(back if back.startswith("/") and not back.startswith("//") else "/", status_code=303)

    for module in (
        dashboard,
        devices,
        tasks,
        tickets,
        people,
        disputes,
        pricing,
        assets,
        finance,
        reconciliation,
        notices,
        campaigns,
        ads,
        vas,
        staff_accounts,
        account,
    ):
        app.include_router(module.router)
    return app


def _login_cookie(response: Response, request: Request, settings: ConsoleSettings, token: str) -> None:
    """The sign-in form's CSRF token, double-submitted: a cookie only this origin can set, and the form field."""
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request, settings),
        path="/login",
        max_age=3600,
    )
