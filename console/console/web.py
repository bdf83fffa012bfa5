"""What every page shares: the staff session from its cookie, permission checks, CSRF on every state
change, the forms' parsing, and rendering with autoescaping templates."""

import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.routing import Match

from console import formatting
from console.backend import Backend, BackendError
from console.i18n import CATALOGUE, translate
from console.menu import MENU, PAGE_PERMISSION
from console.problems import Problem
from console.sessions import COOKIE, SessionStore, StaffSession
from console.settings import ConsoleSettings

log = logging.getLogger("console")
TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 64 * 1024


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""


class NotAllowed(Exception):
    """The staff member's role lacks the permission this page or action needs."""


class AccountPending(Exception):
    """The account must change its password or enrol a second factor before any other page."""


class FormInvalid(Exception):
    """A form field the console cannot read (an amount that is not yuan, a number that is not one)."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"{field}: {value!r}")
        self.field = field
        self.value = value


class CsrfRefused(Exception):
    """A state change without this session's CSRF token (or from another origin)."""


@dataclass
class Console:
    settings: ConsoleSettings
    store: SessionStore
    backend: Backend
    templates: Environment
    zone: ZoneInfo


def templates_for(zone: ZoneInfo) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    env.filters["yuan"] = formatting.yuan
    env.filters["local"] = lambda v, seconds=False: formatting.local_time(v, zone, seconds=seconds)
    env.filters["masked"] = formatting.mask_phone
    env.filters["yuan_input"] = lambda fen: "" if fen is None else f"{fen // 100}.{fen % 100:02d}"
    return env


def console_of(request: Request) -> Console:
    value = request.app.state.console
    assert isinstance(value, Console)
    return value


ConsoleDep = Annotated[Console, Depends(console_of)]


# What a session with something pending may still reach: its own account, sign-out, the language.
PENDING_PATHS = ("/account", "/logout", "/lang")


async def current_staff(request: Request) -> StaffSession:
    console = console_of(request)
    session = await console.store.get(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired()
    if session.pending and not request.url.path.startswith(PENDING_PATHS):
        raise AccountPending()
    if not await keep_fresh(console, session):
        await console.store.end(session.session_id)
        raise SignInRequired()
    if request.method == "GET" and session.problem is not None:
        request.state.problem = await console.store.take_problem(session)
    return session


async def keep_fresh(console: Console, session: StaffSession) -> bool:
    """Refresh the staff token when it has less than `console_refresh_ahead_s` left; False when the
    session cannot go on (user-svc refused: revoked, lapsed, reused; or the token ran out while
    user-svc could not be reached). The session's row stays locked while the refresh token is traded,
    so another request, on this replica or another, waits and then finds the fresh token."""
    ahead = console.settings.console_refresh_ahead_s
    if session.refresh_token is None:
        return session.seconds_left() > 0
    if session.seconds_left() > ahead:
        return True
    async with console.store.locked(session) as (current, db):
        if current is None:  # signed out meanwhile, here or on another replica
            return False
        if current.seconds_left() > ahead:  # another request refreshed it
            session.access_token, session.token_expires_at = current.access_token, current.token_expires_at
            session.refresh_token, session.roles = current.refresh_token, current.roles
            return True
        if current.refresh_token is None:
            return current.seconds_left() > 0
        try:
            answer = await console.backend.call(
                "POST",
                f"{console.backend.services.user}/v1/admin/sessions/refresh",
                json={"refresh_token": current.refresh_token},
            )
        except BackendError as exc:
            if exc.status in (400, 401, 403, 422):
                log.info("staff session not refreshed", extra={"admin_id": session.admin_id, "code": exc.code})
                return False
            log.warning("staff token refresh failed", extra={"admin_id": session.admin_id, "code": exc.code})
            return current.seconds_left() > 0
        await console.store.refreshed(
            db,
            session,
            access_token=str(answer["access_token"]),
            expires_in=int(answer["expires_in"]),
            refresh_token=answer.get("refresh_token"),
            refresh_expires_in=int(answer.get("refresh_expires_in") or 0),
            roles=list(answer["roles"]),
        )
        return True


Staff = Annotated[StaffSession, Depends(current_staff)]


def require(permission: str) -> Callable[..., Coroutine[Any, Any, StaffSession]]:
    async def dependency(staff: Staff) -> StaffSession:
        if not staff.can(permission):
            raise NotAllowed(permission)
        return staff

    return dependency


def page_permission(key: str) -> Callable[..., Coroutine[Any, Any, StaffSession]]:
    permission = PAGE_PERMISSION[key]
    if permission is None:

        async def anyone(staff: Staff) -> StaffSession:
            return staff

        return anyone
    return require(permission)


def form_fen(form: dict[str, str], field: str, *, optional: bool = False) -> int | None:
    value = form.get(field, "").strip()
    if optional and not value:
        return None
    try:
        return formatting.fen_of(value)
    except ValueError:
        raise FormInvalid(field, value) from None


def form_int(form: dict[str, str], field: str, *, optional: bool = False) -> int | None:
    value = form.get(field, "").strip()
    if optional and not value:
        return None
    if not value.isdigit() or len(value) > 9:
        raise FormInvalid(field, value)
    return int(value)


async def read_form(request: Request, expected_csrf: str) -> dict[str, str]:
    """The posted form (application/x-www-form-urlencoded), refused unless it carries the CSRF token."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise CsrfRefused("form too large")
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    sent = form.pop("csrf", "") or request.headers.get("x-csrf-token", "")
    if not sent or not secrets.compare_digest(sent, expected_csrf):
        raise CsrfRefused("missing or wrong CSRF token")
    request.state.back = form.get("back", "")
    request.state.form = form
    return form


def local_path(value: str) -> str | None:
    """A path on this console (never another host), or None."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and len(value) <= 512:
        return value
    return None


def form_page(request: Request) -> str | None:
    """The page a posted form came from, to show its refusal there: the form's `back` field, else the
    posted path itself or its parent (POST /banks/PB-1/eject -> GET /banks/PB-1) when that is a page."""
    back = local_path(str(getattr(request.state, "back", "") or ""))
    path = request.url.path.rstrip("/") or "/"
    candidates = [back] if back else [path, path.rsplit("/", 1)[0] or "/"]
    for candidate in candidates:
        scope = {"type": "http", "path": candidate.split("?")[0].split("#")[0], "method": "GET"}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            return candidate
    return None


@dataclass(frozen=True)
class Upload:
    fields: dict[str, str]
    files: dict[str, bytes]


async def read_upload(request: Request, expected_csrf: str, max_bytes: int) -> Upload:
    """A posted multipart/form-data form (a file input), refused unless it carries the CSRF token.
    Read with the standard library's MIME parser: one small upload form does not justify another
    dependency."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FormInvalid("file", f"more than {max_bytes} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise FormInvalid("file", f"more than {max_bytes} bytes")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise CsrfRefused("not a multipart form")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    parts: list[Message] = list(message.iter_parts()) if message.is_multipart() else []
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_param("filename", header="content-disposition") is not None:
            files[name] = data
        else:
            fields[name] = data.decode("utf-8", errors="replace")
    sent = fields.pop("csrf", "") or request.headers.get("x-csrf-token", "")
    if not sent or not secrets.compare_digest(sent, expected_csrf):
        raise CsrfRefused("missing or wrong CSRF token")
    return Upload(fields, files)


def render(
    request: Request,
    template: str,
    staff: StaffSession | None,
    *,
    status_code: int = 200,
    lang: str | None = None,
    **context: Any,
) -> HTMLResponse:
    console = console_of(request)
    language = lang or (staff.lang if staff else console.settings.console_default_lang)
    menu = [
        item
        for item in MENU
        if staff is not None and not staff.pending and (item.permission is None or staff.can(item.permission))
    ]
    page = console.templates.get_template(template).render(
        t=lambda key, **values: translate(key, language, **values),
        lang=language,
        staff=staff,
        menu=menu,
        path=request.url.path,
        csrf=staff.csrf_token if staff else context.pop("login_csrf", ""),
        zone=console.settings.console_timezone,
        poll_s=console.settings.console_poll_s,
        notice=_notice(request.query_params.get("done", ""), language),
        problem=_problem(getattr(request.state, "problem", None), language),
        **context,
    )
    return HTMLResponse(page, status_code=status_code, headers={"Cache-Control": "no-store"})


def render_fragment(console: Console, template: str, staff: StaffSession, **context: Any) -> str:
    """A part of a page (the dashboard's figures) outside a request, with the same autoescaping."""
    return console.templates.get_template(template).render(
        t=lambda key, **values: translate(key, staff.lang, **values), lang=staff.lang, staff=staff, **context
    )


def _problem(problem: Problem | None, lang: str) -> dict[str, str] | None:
    if problem is None:
        return None
    return {
        "message": problem.message(lang),
        "code": problem.code,
        "detail": problem.detail,
        "refill": problem.refill(),
    }


def _notice(done: str, lang: str) -> str:
    """The confirmation after an action (`?done=<catalogue key>`); only catalogue text is ever shown."""
    if not done:
        return ""
    return translate(done if done in CATALOGUE else "done", lang)
