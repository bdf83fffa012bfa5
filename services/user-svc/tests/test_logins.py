"""Logins by password, code, e-mail and user name; lockout; refresh and logout; profile and terms."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from kit.testing import app_client, truncate_all
from user_svc.main import create_app

from .support import (
    OTHER,
    PASSWORD,
    PHONE,
    TERMS,
    assert_problem,
    bearer,
    login,
    outbox,
    refresh,
    register,
    sms_code,
    sql,
)

pytestmark = pytest.mark.integration


async def test_login_by_sms_code(client):
    user_id = (await register(client))["user_id"]
    code = await sms_code(client, purpose="login")
    response = await client.post("/v1/sessions/sms", json={"phone": PHONE, "code": code})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    session = response.json()
    assert session["user_id"] == user_id and session["refresh_token"]
    me = await client.get("/v1/users/me", headers=bearer(session["access_token"]))
    assert me.status_code == 200
    # used once; a registration code is not a login code
    again = await client.post("/v1/sessions/sms", json={"phone": PHONE, "code": code})
    assert_problem(again, 401, "invalid_credentials")
    reg_code = await sms_code(client, purpose="register")
    assert_problem(
        await client.post("/v1/sessions/sms", json={"phone": PHONE, "code": reg_code}), 401, "invalid_credentials"
    )
    # a code for a number nobody registered looks the same as a wrong code
    other_code = await sms_code(client, OTHER, purpose="login")
    unknown = await client.post("/v1/sessions/sms", json={"phone": OTHER, "code": other_code})
    wrong = await client.post("/v1/sessions/sms", json={"phone": PHONE, "code": "999999"})
    bodies = []
    for r in (unknown, wrong):
        b = assert_problem(r, 401, "invalid_credentials")
        b.pop("correlation_id")
        bodies.append(b)
    assert bodies[0] == bodies[1]


async def test_login_by_email_and_user_name(client):
    created = await register(client)
    token = (await login(client))["access_token"]
    patched = await client.patch("/v1/users/me", json={"username": "XiaoMing_1"}, headers=bearer(token))
    assert patched.status_code == 200, patched.text
    assert patched.json()["username"] == "xiaoming_1"
    sent = await client.post("/v1/users/me/email-codes", json={"email": "Ming@Example.com"}, headers=bearer(token))
    assert sent.status_code == 202, sent.text
    (message,) = await outbox(client, "ming@example.com")
    assert message["channel"] == "email"
    bound = await client.put(
        "/v1/users/me/email", json={"email": "ming@example.com", "code": message["code"]}, headers=bearer(token)
    )
    assert bound.status_code == 200, bound.text
    assert bound.json()["email"] == "ming@example.com"
    for identifier in ("xiaoming_1", "XIAOMING_1", "ming@example.com", " MING@example.com", PHONE):
        assert (await login(client, identifier))["user_id"] == created["user_id"]
    for identifier in ("xiaoming_2", "other@example.com"):
        r = await client.post("/v1/sessions", json={"login": identifier, "password": PASSWORD})
        assert_problem(r, 401, "invalid_credentials")


async def test_lockout_after_repeated_failures(client, settings):
    await register(client)
    for _ in range(settings.login_max_failures - 1):
        assert_problem(
            await client.post("/v1/sessions", json={"login": PHONE, "password": "wrong password"}),
            401,
            "invalid_credentials",
        )
    await login(client)  # success resets the count
    for _ in range(settings.login_max_failures):
        await client.post("/v1/sessions", json={"login": PHONE, "password": "wrong password"})
    locked = await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD})
    problem = assert_problem(locked, 429, "login_locked")
    assert 1 <= int(locked.headers["retry-after"]) <= settings.login_lockout_s
    assert problem["retry_after_s"] == int(locked.headers["retry-after"])
    # an identifier that names nobody locks the same way, so the lockout reveals nothing
    for _ in range(settings.login_max_failures):
        await client.post("/v1/sessions", json={"login": OTHER, "password": "wrong password"})
    assert_problem(await client.post("/v1/sessions", json={"login": OTHER, "password": PASSWORD}), 429, "login_locked")
    # admins too
    for _ in range(settings.login_max_failures):
        await client.post("/v1/admin/sessions", json={"login": "root-admin", "password": "wrong password"})
    r = await client.post("/v1/admin/sessions", json={"login": "root-admin", "password": "test-admin-passphrase"})
    assert_problem(r, 429, "login_locked")


async def test_one_client_address_trying_many_accounts_is_locked(settings, database_url):
    """Password spraying: each identifier fails once (far below its own lockout), yet the address is locked,
    and a success in between does not reset the address's count."""
    from kit.testing import app_client
    from user_svc.main import create_app

    limited = settings.model_copy(update={"login_max_failures_per_client": 3, "login_max_failures": 100})
    await truncate_all(database_url)
    async with app_client(create_app(limited)) as client:
        await register(client)
        for n in range(2):
            r = await client.post("/v1/sessions", json={"login": f"+861380000{n:04d}", "password": "guess-1234"})
            assert_problem(r, 401, "invalid_credentials")
        await login(client)  # the real owner logs in from the same address
        r = await client.post("/v1/sessions", json={"login": "someone@example.com", "password": "guess-1234"})
        assert_problem(r, 401, "invalid_credentials")
        locked = await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD})
        problem = assert_problem(locked, 429, "login_locked")
        assert 1 <= int(locked.headers["retry-after"]) <= limited.login_lockout_s
        assert problem["retry_after_s"] == int(locked.headers["retry-after"])


async def test_refresh_rotates_and_reuse_revokes_the_family(client):
    await register(client)
    first = await login(client)
    unrelated = await login(client)  # another device: another family

    r = await refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user_id"] == first["user_id"]
    assert (await client.get("/v1/users/me", headers=bearer(second["access_token"]))).status_code == 200

    # the first token was rotated: presenting it again is reuse
    assert_problem(await refresh(client, first["refresh_token"]), 401, "refresh_token_reused")
    # the whole family is gone, access tokens it issued included
    assert_problem(await refresh(client, second["refresh_token"]), 401, "invalid_refresh_token")
    for access in (first["access_token"], second["access_token"]):
        assert_problem(await client.get("/v1/users/me", headers=bearer(access)), 401, "token_revoked")
    # the other device is untouched
    assert (await client.get("/v1/users/me", headers=bearer(unrelated["access_token"]))).status_code == 200
    assert (await refresh(client, unrelated["refresh_token"])).status_code == 200


async def test_concurrent_refreshes_of_one_token(client):
    await register(client)
    first = await login(client)
    results = await asyncio.gather(*(refresh(client, first["refresh_token"]) for _ in range(3)))
    assert sum(r.status_code == 200 for r in results) <= 1
    assert all(r.status_code in (200, 401) for r in results)


async def test_bad_refresh_tokens(client, database_url):
    assert_problem(await refresh(client, "not-a-token"), 401, "invalid_refresh_token")
    assert_problem(await client.post("/v1/sessions/refresh", json={"refresh_token": ""}), 422, "validation_error")
    await register(client)
    session = await login(client)
    await sql(database_url, "UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    assert_problem(await refresh(client, session["refresh_token"]), 401, "invalid_refresh_token")


async def test_logout(client):
    await register(client)
    session = await login(client)
    other = await login(client)
    token = session["access_token"]
    r = await client.post(
        "/v1/sessions/logout", json={"refresh_token": session["refresh_token"]}, headers=bearer(token)
    )
    assert r.status_code == 204, r.text
    assert_problem(await client.get("/v1/users/me", headers=bearer(token)), 401, "token_revoked")
    assert_problem(await refresh(client, session["refresh_token"]), 401, "invalid_refresh_token")
    # someone else's refresh token cannot be revoked with my access token; the other session lives on
    assert (await client.get("/v1/users/me", headers=bearer(other["access_token"]))).status_code == 200
    assert_problem(await client.post("/v1/sessions/logout", json={}), 401, "unauthorized")


# --- profile ---------------------------------------------------------------------------------------


async def test_profile_edit_and_username_uniqueness(client):
    await register(client)
    token = (await login(client))["access_token"]
    r = await client.patch("/v1/users/me", json={"display_name": "  Ming  "}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["display_name"] == "Ming" and r.json()["username"] is None
    await client.patch("/v1/users/me", json={"username": "ming"}, headers=bearer(token))
    await register(client, phone=OTHER)
    other = (await login(client, OTHER))["access_token"]
    assert_problem(
        await client.patch("/v1/users/me", json={"username": "MING"}, headers=bearer(other)), 409, "username_taken"
    )
    for bad in ({"username": "1abc"}, {"username": "ab"}, {"display_name": "x" * 65}, {"username": "a b c"}):
        assert_problem(await client.patch("/v1/users/me", json=bad, headers=bearer(other)), 422, "validation_error")
    me = (await client.get("/v1/users/me", headers=bearer(token))).json()
    assert me["display_name"] == "Ming" and me["username"] == "ming"


async def test_change_password_ends_sessions(client):
    await register(client)
    session = await login(client)
    headers = bearer(session["access_token"])
    wrong = await client.post(
        "/v1/users/me/password", json={"current_password": "nope nope", "new_password": "new-pass-123"}, headers=headers
    )
    assert_problem(wrong, 401, "invalid_credentials")
    short = await client.post(
        "/v1/users/me/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=headers
    )
    assert_problem(short, 422, "validation_error")
    ok = await client.post(
        "/v1/users/me/password", json={"current_password": PASSWORD, "new_password": "new-pass-123"}, headers=headers
    )
    assert ok.status_code == 204, ok.text
    assert_problem(await refresh(client, session["refresh_token"]), 401, "invalid_refresh_token")
    assert_problem(
        await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD}), 401, "invalid_credentials"
    )
    await login(client, PHONE, "new-pass-123")


async def test_email_binding_needs_the_right_code_and_a_free_address(client):
    await register(client)
    token = (await login(client))["access_token"]
    await register(client, phone=OTHER)
    other = (await login(client, OTHER))["access_token"]
    await client.post("/v1/users/me/email-codes", json={"email": "a@example.com"}, headers=bearer(token))
    (message,) = await outbox(client, "a@example.com")
    assert_problem(
        await client.put(
            "/v1/users/me/email", json={"email": "b@example.com", "code": message["code"]}, headers=bearer(token)
        ),
        400,
        "code_invalid",
    )
    ok = await client.put(
        "/v1/users/me/email", json={"email": "a@example.com", "code": message["code"]}, headers=bearer(token)
    )
    assert ok.status_code == 200, ok.text
    await client.post("/v1/users/me/email-codes", json={"email": "a@example.com"}, headers=bearer(other))
    code = (await outbox(client, "a@example.com"))[0]["code"]
    taken = await client.put("/v1/users/me/email", json={"email": "a@example.com", "code": code}, headers=bearer(other))
    assert_problem(taken, 409, "email_taken")
    assert_problem(
        await client.post("/v1/users/me/email-codes", json={"email": "not-an-email"}, headers=bearer(token)),
        422,
        "validation_error",
    )


async def test_new_terms_version_asks_again_at_login(client, settings, database_url):
    user_id = (await register(client))["user_id"]
    newer = settings.model_copy(update={"terms_version": "2027-01"})
    async with app_client(create_app(newer)) as c:
        session = (await c.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD})).json()
        assert session["terms_update_required"] is True
        assert session["current_terms_version"] == "2027-01"
        headers = bearer(session["access_token"])
        assert (await c.get("/v1/users/me", headers=headers)).json()["terms_update_required"] is True
        stale = await c.post(
            "/v1/users/me/terms", json={"terms_version": TERMS, "terms_accepted": True}, headers=headers
        )
        assert_problem(stale, 409, "terms_outdated")
        r = await c.post(
            "/v1/users/me/terms", json={"terms_version": "2027-01", "terms_accepted": True}, headers=headers
        )
        assert r.status_code == 200, r.text
        assert r.json()["terms_update_required"] is False
        again = (await c.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD})).json()
        assert again["terms_update_required"] is False
    (row,) = await sql(database_url, "SELECT terms_version, terms_accepted_at FROM users WHERE id = $1::uuid", user_id)
    assert row["terms_version"] == "2027-01"
    assert datetime.now(UTC) - row["terms_accepted_at"] < timedelta(minutes=1)
