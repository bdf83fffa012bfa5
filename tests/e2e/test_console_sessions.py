"""Console sessions over plain HTTP: the silent token refresh until user-svc revokes the session, and two
console processes sharing their sessions through the console's database."""

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from console_http import (
    ADMIN,
    Browserless,
)
from mesh import Mesh
from platform_client import wait_for

from kit.httpclient import async_client

pytestmark = pytest.mark.e2e


async def test_the_console_refreshes_the_staff_token_silently_until_the_session_is_revoked(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    """The test stack's console refreshes a token with less than 895 s of its 900 left (about every 5 s)."""
    api = mesh.client()
    root = await api.admin_login(*ADMIN)
    login, password = f"oper{uuid.uuid4().hex[:6]}", "operator-password-1"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=root,
        json={"login": login, "password": password, "role": "operator", "must_change_password": False},
    )
    assert created.status == 201, created.response.text
    sessions_url = f"{api.urls.user}/v1/admin/admins/{created.json()['admin_id']}/sessions"

    async def sessions() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await api.call("GET", sessions_url, token=root)).json()
        return found

    member = console()
    assert (await member.sign_in(login, password)).headers["location"] == "/"
    [signed_in] = await sessions()

    async def refreshed() -> dict[str, Any] | None:
        page = await member.http.get("/tasks")
        assert page.status_code == 200, (page.status_code, page.headers.get("location"))  # never signed out
        [now] = await sessions()
        return now if now["expires_at"] > signed_in["expires_at"] else None

    after, _ = await wait_for(refreshed, timeout_s=30, interval_s=0.5)
    assert after["session_id"] == signed_in["session_id"]  # the same session, its tokens renewed

    revoked = await api.call("DELETE", f"{sessions_url}/{signed_in['session_id']}", token=root)
    assert revoked.status == 204, revoked.response.text

    async def signed_out() -> str | None:
        page = await member.http.get("/tasks")
        return page.headers.get("location") if page.status_code == 303 else None

    location, _ = await wait_for(signed_out, timeout_s=15, interval_s=0.5)
    assert location == "/login?expired=1"
    assert (await member.http.get("/tasks")).headers["location"].startswith("/login")  # the session is gone


@pytest.fixture
async def second_console(mesh: Mesh) -> AsyncIterator[str]:
    """Another console process beside the stack's, on the same session database (a second replica)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "uvicorn", "console.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)),
        env={**os.environ, "SERVICE_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with async_client(timeout=5.0) as http:

            async def ready() -> bool:
                try:
                    return (await http.get(f"{url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout_s=60, interval_s=0.3)
        yield url
    finally:
        process.terminate()
        await process.wait()


async def test_two_console_processes_share_sign_ins_and_a_sign_out_ends_it_on_both(
    mesh: Mesh, console: Callable[[], Browserless], second_console: str
) -> None:
    first = console()
    assert (await first.sign_in(*ADMIN)).headers["location"] == "/"
    cookie = first.http.cookies.get("pb_console")
    assert cookie
    async with async_client(base_url=second_console, timeout=15.0) as http:
        second = Browserless(http)
        http.cookies.set("pb_console", cookie)
        page = await second.page("/tasks")  # signed in on the other process, known here
        assert 'data-menu="nav.tasks"' in page
        await second.post("/lang")  # a preference set on one is seen on the other
        assert '<html lang="en">' in await first.page("/tasks")
        signed_out = await second.post("/logout")
        assert signed_out.headers["location"] == "/login?out=1"
    gone = await first.http.get("/tasks")
    assert (gone.status_code, gone.headers["location"]) == (303, "/login?expired=1")
