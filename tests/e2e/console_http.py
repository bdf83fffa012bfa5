"""What the console's plain-HTTP tests share (tests/e2e/test_console_*.py; the `console` fixture is in
conftest.py): a staff member's cookie jar that posts forms with the page's CSRF token, reading figures
and the menu from a page, and a few ready-made things (a staff member of a role, a settled rental).
No browser: cheaper, and the browser tests in test_console.py cover the script, cookies and keyboard."""

import asyncio
import os
import re
import uuid
from datetime import datetime
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from mesh import Mesh
from platform_client import PlatformClient, wait_for

ADMIN = (
    os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
    os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
)
SHANGHAI = ZoneInfo("Asia/Shanghai")  # the console's zone on the test stack (CONSOLE_TIMEZONE)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browserless:
    """One staff member's cookie jar on the console: gets pages, posts forms with the page's CSRF token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf = ""

    async def page(self, path: str, status: int = 200) -> str:
        answer = await self.http.get(path)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
        found = CSRF.search(answer.text)
        if found:
            self.csrf = found.group(1)
        return answer.text

    async def post(self, path: str, form: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **(form or {})})

    async def sign_in(self, login: str, password: str, totp_code: str = "") -> httpx.Response:
        await self.page("/login")
        return await self.post("/login", {"login": login, "password": password, "totp_code": totp_code})


def text(html: str, figure: str) -> str:
    found = re.search(rf'data-figure="{figure}">(.*?)</', html, re.S)
    assert found, f"no {figure} on the page"
    return unescape(found.group(1)).strip()


def menu(html: str) -> list[str]:
    return re.findall(r'data-menu="(nav\.[a-z_]+)"', html)


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


async def settled_rental(mesh: Mesh, user: PlatformClient) -> dict[str, Any]:
    """A rental borrowed from one emulated cabinet, returned to another, and paid."""
    cabinets = [c for c in await user.cabinets() if c["online"]]
    source = max(cabinets, key=lambda c: c["banks_available"])
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    await asyncio.sleep(1.1)  # durations count whole seconds; a 0-second rental is free
    target = max((c for c in cabinets if c["id"] != source["id"]), key=lambda c: c["free_slots"])
    await mesh.fleet[target["id"]].return_bank(rental["bank_id"])

    async def settled() -> dict[str, Any] | None:
        now = await user.rental(rental["rental_id"])
        return now if now["state"] == "settled" else None

    found, _ = await wait_for(settled, timeout_s=30, interval_s=0.2)
    return found


async def staff_member(mesh: Mesh, role: str) -> tuple[str, str]:
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    login, password = f"{role[:4]}{uuid.uuid4().hex[:6]}", f"{role}-password-1"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=token,
        json={"login": login, "password": password, "role": role, "must_change_password": False},
    )
    assert created.status == 201, created.response.text
    return login, password


def local_minute(at: datetime) -> str:
    """A datetime-local field's value in the console's zone."""
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
