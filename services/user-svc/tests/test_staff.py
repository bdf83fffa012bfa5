"""Staff accounts (issue 15): lifecycle, forced password change, TOTP second factor, sessions."""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pyotp
import pytest
from sqlalchemy import make_url

from kit.testing import app_client, eventually, truncate_all
from user_svc.main import create_app
from user_svc.settings import Settings
from user_svc.staff.totp import STEP_S

from .support import ADMIN, assert_problem, bearer

pytestmark = pytest.mark.integration

PASSWORD = "staff-pass-123"


async def sql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(make_url(database_url).set(drivername="postgresql").render_as_string(False))
    try:
        if not args and ";" in query:
            await conn.execute(query)
            return []
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.fixture
async def client(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """TOTP enforced, as in production (the root administrator is super_admin: it must enrol too)."""
    await truncate_all(database_url)
    enforced = settings.model_copy(update={"admin_totp_required": True, "audit_trail_consumer": True})
    async with app_client(create_app(enforced)) as c:
        yield c


async def root_token(client: httpx.AsyncClient) -> str:
    """The root administrator (created afresh for each test), enrolled with a second factor."""
    first = await client.post("/v1/admin/sessions", json=ADMIN)
    assert first.status_code == 200, first.text
    assert first.json()["pending"] == ["totp_enrolment"] and first.json()["roles"] == []
    secret = await enrol(client, first.json()["access_token"])
    return await sign_in(client, ADMIN["login"], ADMIN["password"], secret)


async def enrol(client: httpx.AsyncClient, token: str) -> str:
    begun = await client.post("/v1/admin/me/totp", headers=bearer(token))
    assert begun.status_code == 201, begun.text
    secret: str = begun.json()["secret"]
    confirmed = await client.post(
        "/v1/admin/me/totp/confirm", json={"code": pyotp.TOTP(secret).at(_next_unused(secret))}, headers=bearer(token)
    )
    assert confirmed.status_code == 204, confirmed.text
    return secret


async def sign_in(client: httpx.AsyncClient, login: str, password: str, secret: str | None = None) -> str:
    body: dict[str, Any] = {"login": login, "password": password}
    if secret is not None:
        # a code is accepted once: take the next step's when this one was spent (the window allows one step)
        body["totp_code"] = pyotp.TOTP(secret).at(_next_unused(secret))
    r = await client.post("/v1/admin/sessions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["pending"] == [], r.json()
    token: str = r.json()["access_token"]
    return token


_used: dict[str, int] = {}


def _next_unused(secret: str) -> int:
    step = max(int(time.time() // STEP_S), _used.get(secret, -1) + 1)
    _used[secret] = step
    return step * STEP_S


async def create(client: httpx.AsyncClient, root: str, login: str, role: str, **extra: Any) -> str:
    r = await client.post(
        "/v1/admin/admins", json={"login": login, "password": PASSWORD, "role": role, **extra}, headers=bearer(root)
    )
    assert r.status_code == 201, r.text
    admin_id: str = r.json()["admin_id"]
    return admin_id


async def test_a_new_administrator_must_replace_the_chosen_password(client, database_url):
    root = await root_token(client)
    admin_id = await create(client, root, "analyst-7", "analyst")
    first = await client.post("/v1/admin/sessions", json={"login": "analyst-7", "password": PASSWORD})
    assert first.status_code == 200, first.text
    assert first.json()["roles"] == [] and first.json()["pending"] == ["password_change"]
    restricted = first.json()["access_token"]
    # a restricted session holds no permission anywhere, but sees its own account
    assert_problem(await client.get("/v1/admin/audit-log", headers=bearer(restricted)), 403, "forbidden")
    me = await client.get("/v1/admin/me", headers=bearer(restricted))
    assert me.status_code == 200 and me.json()["pending"] == ["password_change"]
    assert me.json()["admin_id"] == admin_id and me.json()["totp_required"] is False
    wrong = await client.post(
        "/v1/admin/me/password",
        json={"current_password": "not it at all", "new_password": "a-new-passphrase"},
        headers=bearer(restricted),
    )
    assert_problem(wrong, 401, "invalid_credentials")
    changed = await client.post(
        "/v1/admin/me/password",
        json={"current_password": PASSWORD, "new_password": "a-new-passphrase"},
        headers=bearer(restricted),
    )
    assert changed.status_code == 204, changed.text
    assert_problem(await client.get("/v1/admin/me", headers=bearer(restricted)), 401, "token_revoked")
    assert (
        await client.post("/v1/admin/sessions", json={"login": "analyst-7", "password": PASSWORD})
    ).status_code == 401
    full = await client.post("/v1/admin/sessions", json={"login": "analyst-7", "password": "a-new-passphrase"})
    assert full.json()["roles"] == ["analyst"] and full.json()["pending"] == []
    rows = await sql(database_url, "SELECT action FROM admin_actions WHERE target_id = $1 ORDER BY id", admin_id)
    assert [r["action"] for r in rows] == ["admin.create", "admin.password_change"]


async def test_roles_that_move_money_need_a_second_factor(client, database_url):
    root = await root_token(client)
    admin_id = await create(client, root, "finance-7", "finance", must_change_password=False)
    first = (await client.post("/v1/admin/sessions", json={"login": "finance-7", "password": PASSWORD})).json()
    assert first["roles"] == [] and first["pending"] == ["totp_enrolment"]
    token = first["access_token"]
    assert_problem(await client.get("/v1/admin/users", headers=bearer(token)), 403, "forbidden")
    assert_problem(
        await client.post("/v1/admin/me/totp/confirm", json={"code": "123456"}, headers=bearer(token)),
        409,
        "totp_not_pending",
    )
    begun = (await client.post("/v1/admin/me/totp", headers=bearer(token))).json()
    assert begun["provisioning_uri"].startswith("otpauth://totp/")
    assert "finance-7" in begun["provisioning_uri"] and "issuer=" in begun["provisioning_uri"]
    secret = begun["secret"]
    wrong = str((int(pyotp.TOTP(secret).now()) + 500_000) % 1_000_000).zfill(6)
    assert_problem(
        await client.post("/v1/admin/me/totp/confirm", json={"code": wrong}, headers=bearer(token)),
        400,
        "totp_code_invalid",
    )
    code = pyotp.TOTP(secret).at(_next_unused(secret))
    confirmed = await client.post("/v1/admin/me/totp/confirm", json={"code": code}, headers=bearer(token))
    assert confirmed.status_code == 204, confirmed.text
    # the secret is stored encrypted, never as itself
    (row,) = await sql(database_url, "SELECT totp_secret, totp_pending FROM admins WHERE id = $1::uuid", admin_id)
    assert row["totp_secret"].startswith("v1:") and secret not in row["totp_secret"] and row["totp_pending"] is None

    login = {"login": "finance-7", "password": PASSWORD}
    assert_problem(await client.post("/v1/admin/sessions", json=login), 401, "totp_required")
    assert_problem(
        await client.post("/v1/admin/sessions", json={**login, "totp_code": wrong}), 401, "invalid_credentials"
    )
    # the code that confirmed the enrolment is spent
    assert_problem(
        await client.post("/v1/admin/sessions", json={**login, "totp_code": code}), 401, "invalid_credentials"
    )
    full = await sign_in(client, "finance-7", PASSWORD, secret)
    assert (await client.get("/v1/admin/users", headers=bearer(full))).status_code == 200
    # a role that neither moves money nor sees personal data is not asked
    await create(client, root, "field-7", "field_maintenance", must_change_password=False)
    field = (await client.post("/v1/admin/sessions", json={"login": "field-7", "password": PASSWORD})).json()
    assert field["roles"] == ["field_maintenance"] and field["pending"] == []

    # a lost phone: the factor is reset by an administrator, the next sign-in enrols again
    reset = await client.post(
        f"/v1/admin/admins/{admin_id}/totp-reset", json={"reason": "lost phone"}, headers=bearer(root)
    )
    assert reset.status_code == 200 and reset.json()["totp_enabled"] is False
    assert_problem(await client.get("/v1/admin/users", headers=bearer(full)), 401, "token_revoked")
    again = (await client.post("/v1/admin/sessions", json=login)).json()
    assert again["pending"] == ["totp_enrolment"]


async def test_repeated_wrong_codes_lock_the_login(client):
    root = await root_token(client)
    await create(client, root, "support-7", "support", must_change_password=False)
    token = (await client.post("/v1/admin/sessions", json={"login": "support-7", "password": PASSWORD})).json()
    secret = await enrol(client, token["access_token"])
    good = pyotp.TOTP(secret).now()
    wrong = str((int(good) + 1) % 1_000_000).zfill(6)
    for _ in range(5):
        r = await client.post(
            "/v1/admin/sessions", json={"login": "support-7", "password": PASSWORD, "totp_code": wrong}
        )
        assert r.status_code == 401
    locked = await client.post(
        "/v1/admin/sessions", json={"login": "support-7", "password": PASSWORD, "totp_code": good}
    )
    assert_problem(locked, 429, "login_locked")


async def test_staff_lifecycle_role_disable_reset_sessions(client, database_url):
    root = await root_token(client)
    admin_id = await create(client, root, "ops-7", "operator", must_change_password=False)
    ops = await sign_in(client, "ops-7", PASSWORD)
    second = await sign_in(client, "ops-7", PASSWORD)

    listed = await client.get("/v1/admin/admins", headers=bearer(root))
    assert {a["login"] for a in listed.json()} == {"root-admin", "ops-7"}
    assert next(a for a in listed.json() if a["login"] == "root-admin")["totp_enabled"] is True
    assert_problem(await client.get("/v1/admin/admins", headers=bearer(ops)), 403, "forbidden")
    # ... but as a dispatcher the operator sees whom tasks can go to: login and role, nothing more
    directory = await client.get("/v1/admin/staff-directory", params={"role": "operator"}, headers=bearer(ops))
    assert directory.json() == [{"admin_id": admin_id, "login": "ops-7", "role": "operator"}]
    everyone = (await client.get("/v1/admin/staff-directory", headers=bearer(ops))).json()
    assert [a["login"] for a in everyone] == ["ops-7", "root-admin"]

    sessions = (await client.get(f"/v1/admin/admins/{admin_id}/sessions", headers=bearer(root))).json()
    assert len(sessions) == 2 and all(s["revoked_at"] is None for s in sessions)
    mine = (await client.get("/v1/admin/me/sessions", headers=bearer(second))).json()
    assert [s["current"] for s in mine] == [True, False]
    # revoke the older session: it stops, the other goes on
    revoked = await client.delete(f"/v1/admin/admins/{admin_id}/sessions/{mine[1]['session_id']}", headers=bearer(root))
    assert revoked.status_code == 204
    assert_problem(await client.get("/v1/admin/users", headers=bearer(ops)), 401, "token_revoked")
    assert (await client.get("/v1/admin/users", headers=bearer(second))).status_code == 200
    assert_problem(
        await client.delete(f"/v1/admin/admins/{admin_id}/sessions/{mine[1]['session_id']}", headers=bearer(root)),
        404,
        "admin_session_not_found",
    )

    # a role change ends the sessions (their tokens carry the old role); before and after are audited
    changed = await client.put(
        f"/v1/admin/admins/{admin_id}/role", json={"role": "analyst", "reason": "moved team"}, headers=bearer(root)
    )
    assert changed.status_code == 200 and changed.json()["role"] == "analyst"
    assert_problem(await client.get("/v1/admin/me", headers=bearer(second)), 401, "token_revoked")
    analyst = await sign_in(client, "ops-7", PASSWORD)
    assert_problem(await client.get("/v1/admin/users", headers=bearer(analyst)), 403, "forbidden")
    assert_problem(await client.get("/v1/admin/staff-directory", headers=bearer(analyst)), 403, "forbidden")

    disabled = await client.post(f"/v1/admin/admins/{admin_id}/disable", json={"reason": "left"}, headers=bearer(root))
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    directory = (await client.get("/v1/admin/staff-directory", headers=bearer(root))).json()
    assert [a["login"] for a in directory] == ["root-admin"]  # a disabled account takes no task
    assert_problem(await client.get("/v1/admin/me", headers=bearer(analyst)), 401, "token_revoked")
    login = {"login": "ops-7", "password": PASSWORD}
    assert_problem(await client.post("/v1/admin/sessions", json=login), 401, "invalid_credentials")
    assert_problem(
        await client.post(f"/v1/admin/admins/{admin_id}/disable", json={"reason": "x"}, headers=bearer(root)),
        409,
        "admin_already_in_state",
    )
    enabled = await client.post(f"/v1/admin/admins/{admin_id}/enable", json={"reason": "back"}, headers=bearer(root))
    assert enabled.json()["status"] == "active"

    reset = await client.post(
        f"/v1/admin/admins/{admin_id}/password-reset", json={"reason": "forgot"}, headers=bearer(root)
    )
    assert reset.status_code == 200 and reset.headers["cache-control"] == "no-store"
    temporary = reset.json()["temporary_password"]
    assert_problem(await client.post("/v1/admin/sessions", json=login), 401, "invalid_credentials")
    after = (await client.post("/v1/admin/sessions", json={"login": "ops-7", "password": temporary})).json()
    assert after["pending"] == ["password_change"] and after["roles"] == []

    # nobody disables themselves or removes the last super administrator
    root_id = (await client.get("/v1/admin/me", headers=bearer(root))).json()["admin_id"]
    assert_problem(
        await client.post(f"/v1/admin/admins/{root_id}/disable", json={"reason": "x"}, headers=bearer(root)),
        409,
        "admin_self_change",
    )
    rows = await sql(
        database_url,
        "SELECT action, details FROM admin_actions WHERE target_id = $1 AND action LIKE 'admin.%' ORDER BY id",
        admin_id,
    )
    actions = [r["action"] for r in rows]
    assert actions == [
        "admin.create",
        "admin.session_revoke",
        "admin.role_change",
        "admin.disable",
        "admin.enable",
        "admin.password_reset",
    ]
    role_change = json.loads(rows[2]["details"])
    assert role_change == {"before": {"role": "operator"}, "after": {"role": "analyst"}}


async def test_staff_actions_reach_the_hash_chained_trail(client, database_url):
    root = await root_token(client)
    admin_id = await create(client, root, "ops-8", "operator", must_change_password=False)
    changed = await client.put(
        f"/v1/admin/admins/{admin_id}/role", json={"role": "analyst", "reason": "moved team"}, headers=bearer(root)
    )
    assert changed.status_code == 200

    async def entries() -> list[dict[str, Any]]:
        r = await client.get("/v1/admin/audit-trail", params={"target_id": admin_id}, headers=bearer(root))
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        return found if len(found) >= 2 else []

    newest, created = await eventually(entries, what="the staff actions in the audit trail")
    assert (created["action"], newest["action"]) == ("admin.create", "admin.role_change")
    assert (
        newest["service"] == "user-svc" and newest["actor_kind"] == "admin" and newest["actor_roles"] == ["super_admin"]
    )
    assert (newest["before"], newest["after"], newest["reason"]) == (
        {"role": "operator"},
        {"role": "analyst"},
        "moved team",
    )
    assert newest["correlation_id"] and newest["client_address"]
    assert newest["seq"] > created["seq"] and len(newest["hash"]) == 64
    analyst = await sign_in(client, "ops-8", PASSWORD)
    assert_problem(await client.get("/v1/admin/audit-trail", headers=bearer(analyst)), 403, "forbidden")

    verified = (await client.get("/v1/admin/audit-trail/verify", headers=bearer(root))).json()
    assert verified["ok"] is True and verified["entries"] >= 2 and verified["first_broken_seq"] is None
    # append-only: the database refuses changes ...
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await sql(database_url, "UPDATE staff_audit SET reason = 'nothing' WHERE seq = $1", newest["seq"])
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await sql(database_url, "DELETE FROM staff_audit WHERE seq = $1", created["seq"])
    # ... and one made around the trigger (by the table's owner) breaks the chain from that entry on
    await sql(
        database_url,
        "ALTER TABLE staff_audit DISABLE TRIGGER staff_audit_no_change;"
        f"UPDATE staff_audit SET reason = 'nothing to see' WHERE seq = {newest['seq']};"
        "ALTER TABLE staff_audit ENABLE TRIGGER staff_audit_no_change",
    )
    broken = (await client.get("/v1/admin/audit-trail/verify", headers=bearer(root))).json()
    assert broken["ok"] is False and broken["first_broken_seq"] == newest["seq"]


async def test_staff_sessions_refresh_with_rotating_tokens_and_end_with_the_session(client, database_url):
    root = await root_token(client)
    admin_id = await create(client, root, "ops-refresh", "operator", must_change_password=False)
    signed_in = await client.post("/v1/admin/sessions", json={"login": "ops-refresh", "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    first = signed_in.json()
    assert first["refresh_token"] and 0 < first["refresh_expires_in"] <= 1800

    refreshed = await client.post("/v1/admin/sessions/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.headers["cache-control"] == "no-store"
    second = refreshed.json()
    assert second["roles"] == ["operator"] and second["session_id"] == first["session_id"]
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/v1/admin/me", headers=bearer(second["access_token"]))).status_code == 200
    listed = await client.get(f"/v1/admin/admins/{admin_id}/sessions", headers=bearer(root))
    assert [s["session_id"] for s in listed.json()] == [first["session_id"]]  # one session, refreshed

    # The spent refresh token presented again (a stolen copy): the session ends, with both its tokens.
    reused = await client.post("/v1/admin/sessions/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(reused, 401, "refresh_token_reused")
    again = await client.post("/v1/admin/sessions/refresh", json={"refresh_token": second["refresh_token"]})
    assert_problem(again, 401, "invalid_refresh_token")
    for token in (first["access_token"], second["access_token"]):
        assert_problem(await client.get("/v1/admin/me", headers=bearer(token)), 401, "token_revoked")

    # A session revoked by an administrator cannot be refreshed either, nor used with the token it had.
    other = (await client.post("/v1/admin/sessions", json={"login": "ops-refresh", "password": PASSWORD})).json()
    later = (await client.post("/v1/admin/sessions/refresh", json={"refresh_token": other["refresh_token"]})).json()
    revoked = await client.delete(f"/v1/admin/admins/{admin_id}/sessions/{other['session_id']}", headers=bearer(root))
    assert revoked.status_code == 204, revoked.text
    refused = await client.post("/v1/admin/sessions/refresh", json={"refresh_token": later["refresh_token"]})
    assert_problem(refused, 401, "invalid_refresh_token")
    for token in (other["access_token"], later["access_token"]):
        assert_problem(await client.get("/v1/admin/me", headers=bearer(token)), 401, "token_revoked")
    rows = await sql(
        database_url, "SELECT revoked_reason FROM admin_sessions WHERE admin_id = $1 ORDER BY created_at", admin_id
    )
    assert [r["revoked_reason"] for r in rows] == ["refresh_reused", "admin_session_revoked"]

    # A session with something pending gets no refresh token: it signs in again once that is done.
    await create(client, root, "ops-pending", "operator")
    pending = (await client.post("/v1/admin/sessions", json={"login": "ops-pending", "password": PASSWORD})).json()
    assert pending["pending"] == ["password_change"] and pending["refresh_token"] is None
    assert_problem(
        await client.post("/v1/admin/sessions/refresh", json={"refresh_token": "x" * 43}), 401, "invalid_refresh_token"
    )
