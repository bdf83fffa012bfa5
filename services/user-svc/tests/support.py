"""Shared helpers of the user-svc API tests (registration, codes, sessions, staff)."""

from typing import Any

import asyncpg
import httpx
from sqlalchemy import make_url

PHONE = "+8613800138000"
PASSWORD = "correct horse battery"
TERMS = "2026-11"


def registration(**overrides: Any) -> dict[str, Any]:
    body = {
        "phone": PHONE,
        "password": PASSWORD,
        "terms_version": TERMS,
        "terms_accepted": True,
        "display_name": "小明",
        "sms_code": "000000",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


ADMIN = {"login": "root-admin", "password": "test-admin-passphrase"}


async def admin_token(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/admin/sessions", json=ADMIN)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def sms_code(client: httpx.AsyncClient, phone: str = PHONE, purpose: str = "register") -> str:
    """Ask for a code and read it from the sandbox provider's dev outbox, as an operator would."""
    sent = await client.post("/v1/sms-codes", json={"phone": phone, "purpose": purpose})
    assert sent.status_code == 202, sent.text
    outbox = await client.get(
        "/v1/dev/messages",
        params={"destination": phone.replace(" ", "").replace("-", ""), "limit": 1},
        headers=bearer(await admin_token(client)),
    )
    assert outbox.status_code == 200, outbox.text
    message = outbox.json()[0]
    assert message["status"] == "delivered"
    assert message["code"] in message["body"]
    code: str = message["code"]
    return code


async def register(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = registration(**overrides)
    if "sms_code" not in overrides:
        body["sms_code"] = await sms_code(client, body["phone"])
    response = await client.post("/v1/users", json=body)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(client: httpx.AsyncClient, phone: str = PHONE, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/v1/sessions", json={"login": phone, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def pg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


OTHER = "+8613900139000"


async def outbox(client: httpx.AsyncClient, destination: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/dev/messages", params={"destination": destination}, headers=bearer(await admin_token(client))
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()
    return messages


async def sql(database_url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/sessions/refresh", json={"refresh_token": token})


async def new_admin(client: httpx.AsyncClient, role: str, login_name: str | None = None) -> str:
    login_name = login_name or f"{role.replace('_', '-')}-1"
    root = await admin_token(client)
    r = await client.post(
        "/v1/admin/admins",
        json={"login": login_name, "password": "admin-pass-123", "role": role, "must_change_password": False},
        headers=bearer(root),
    )
    assert r.status_code == 201, r.text
    session = await client.post("/v1/admin/sessions", json={"login": login_name, "password": "admin-pass-123"})
    assert session.status_code == 200, session.text
    assert session.json()["roles"] == [role]
    token: str = session.json()["access_token"]
    return token
