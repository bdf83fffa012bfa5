import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import make_url

from contracts import Envelope, Topic, new_event
from contracts.events import ChargeSettled, DebtWaived, RentalEnded, RentalStarted, SendSms, UserRegistered
from kit.auth import TokenSigner, TokenVerifier
from kit.testing import app_client, kafka_bootstrap, truncate_all, write_keypair
from user_svc.main import create_app
from user_svc.settings import Settings

pytestmark = pytest.mark.integration

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


async def test_terms(client):
    response = await client.get("/v1/terms")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == TERMS
    assert body["text"]


async def test_register_login_me(client, database_url):
    created = await register(client, phone="+86 138-0013-8000")
    assert created["phone"] == PHONE
    assert created["display_name"] == "小明"
    user_id = created["user_id"]
    uuid.UUID(user_id)
    assert "password" not in json.dumps(created)

    session = await login(client)
    assert session["token_type"] == "bearer"
    assert session["user_id"] == user_id
    assert session["expires_in"] == 300  # short-lived access tokens (ACCESS_TOKEN_TTL_S)
    assert session["refresh_token"]
    assert session["terms_update_required"] is False

    response = await client.get("/v1/users/me", headers=bearer(session["access_token"]))
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["user_id"] == user_id
    assert me["phone"] == PHONE
    assert me["display_name"] == "小明"
    assert me["terms_version"] == TERMS
    assert me["status"] == "active"
    assert not any("password" in key or "hash" in key for key in me)
    assert "$argon2" not in response.text

    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT password_hash, terms_version, terms_accepted_at FROM users WHERE id = $1", uuid.UUID(user_id)
        )
    finally:
        await conn.close()
    assert row["password_hash"].startswith("$argon2id$")
    assert row["terms_version"] == TERMS
    assert row["terms_accepted_at"] is not None


async def test_token_claims(client, keypair, settings):
    created = await register(client)
    session = await login(client)
    principal = TokenVerifier.from_file(keypair[1], settings.jwt_issuer, settings.jwt_audience).verify(
        session["access_token"]
    )
    assert principal.subject == created["user_id"]
    assert principal.kind == "user"
    assert principal.roles == frozenset()


async def test_duplicate_phone(client):
    await register(client)
    code = await sms_code(client)
    response = await client.post(
        "/v1/users", json=registration(phone="+86 13800138000", password="another-pass", sms_code=code)
    )
    assert_problem(response, 409, "phone_taken")


async def test_concurrent_registrations_of_one_phone(client):
    code = await sms_code(client)
    responses = await asyncio.gather(*(client.post("/v1/users", json=registration(sms_code=code)) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [201, 400, 400, 400]
    assert {r.json()["code"] for r in responses if r.status_code == 400} == {"code_invalid"}


async def test_terms_must_be_accepted(client):
    assert_problem(await client.post("/v1/users", json=registration(terms_accepted=False)), 422, "terms_not_accepted")
    body = registration()
    del body["terms_accepted"]
    assert_problem(await client.post("/v1/users", json=body), 422, "terms_not_accepted")
    # consent is an explicit boolean, not a truthy string
    assert_problem(await client.post("/v1/users", json=registration(terms_accepted="yes")), 422, "validation_error")
    problem = assert_problem(
        await client.post("/v1/users", json=registration(terms_version="2025-01")), 409, "terms_outdated"
    )
    assert problem["current_version"] == TERMS
    # nothing was registered along the way
    await register(client)


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (registration(phone="13800138000"), "invalid_phone"),
        (registration(phone="+86123"), "invalid_phone"),
        (registration(phone=12345678901), "string_type"),
        (registration(password="short"), "password_too_short"),
        (registration(password="x" * 129), "password_too_long"),
        (registration(display_name="x" * 65), "display_name_too_long"),
        (registration(terms_version=""), "string_too_short"),
        ({}, "missing"),
    ],
)
async def test_bad_registration_input(client, body, error_type):
    problem = assert_problem(await client.post("/v1/users", json=body), 422, "validation_error")
    assert error_type in {e["type"] for e in problem["errors"]}
    assert PASSWORD not in json.dumps(problem)


async def test_malformed_bodies_are_4xx(client):
    for path in ("/v1/users", "/v1/sessions", "/v1/admin/sessions"):
        response = await client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert_problem(response, 422, "validation_error")
        response = await client.post(path, json=["a", "list"])
        assert_problem(response, 422, "validation_error")
    assert_problem(await client.post("/v1/sessions", json={"login": "", "password": "x"}), 422, "validation_error")
    assert_problem(
        await client.post("/v1/sessions", json={"login": "x" * 400, "password": "x"}), 422, "validation_error"
    )


async def test_wrong_password_and_unknown_phone_look_the_same(client):
    await register(client)
    attempts = [
        {"login": PHONE, "password": "wrong password"},
        {"login": "+8613900139000", "password": PASSWORD},
        {"login": "not a phone", "password": PASSWORD},
    ]
    responses = [await client.post("/v1/sessions", json=body) for body in attempts]
    bodies = []
    for response in responses:
        assert_problem(response, 401, "invalid_credentials")
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        assert body.pop("correlation_id")
        bodies.append(body)
    assert bodies[0] == bodies[1] == bodies[2]


async def test_outbox_event_reaches_kafka(client, database_url):
    user_id = (await register(client))["user_id"]

    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        deadline = time.monotonic() + 10
        while True:
            row = await conn.fetchrow("SELECT event_type, topic, key, published_at FROM outbox WHERE key = $1", user_id)
            if row is not None and row["published_at"] is not None:
                break
            assert time.monotonic() < deadline, f"outbox row not published: {row}"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert row["event_type"] == "user.user.registered"
    assert row["topic"] == Topic.USERS.value

    consumer = AIOKafkaConsumer(
        Topic.USERS.value, bootstrap_servers=kafka_bootstrap(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        found = None
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if record.key == user_id.encode():
                        found = Envelope.model_validate_json(record.value)
    finally:
        await consumer.stop()
    assert found is not None, "user.user.registered not found on user.users.v1"
    assert found.type == "user.user.registered"
    assert found.producer == "user-svc"
    assert found.key == user_id
    assert isinstance(found.data, UserRegistered)
    assert str(found.data.user_id) == user_id
    assert found.data.terms_version == TERMS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(settings: Settings, sub: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "kind": "user",
        "roles": [],
        **extra,
    }


async def test_forged_tokens_are_refused(client, settings, keypair, tmp_path):
    user_id = (await register(client))["user_id"]
    token = (await login(client))["access_token"]
    header, payload, signature = token.split(".")

    other = (await register(client, phone="+8613900139000"))["user_id"]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = other
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"

    other_private, _ = write_keypair(tmp_path / "other")
    foreign = TokenSigner.from_file(other_private, settings.jwt_issuer, settings.jwt_audience).issue(user_id)

    none_header = _b64(b'{"alg":"none","typ":"JWT"}')
    unsigned = f"{none_header}.{_b64(json.dumps(_claims(settings, user_id)).encode())}."

    hs_header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    hs_payload = _b64(json.dumps(_claims(settings, user_id)).encode())
    mac = hmac.new(keypair[1].read_bytes(), f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest()
    hmac_confused = f"{hs_header}.{hs_payload}.{_b64(mac)}"

    expired = TokenSigner.from_file(keypair[0], settings.jwt_issuer, settings.jwt_audience, ttl_s=-120).issue(user_id)
    wrong_audience = TokenSigner.from_file(keypair[0], settings.jwt_issuer, "someone-else").issue(user_id)

    for bad in (tampered, foreign, unsigned, hmac_confused, expired, wrong_audience, "garbage", f"{token}x"):
        response = await client.get("/v1/users/me", headers=bearer(bad))
        assert_problem(response, 401, "unauthorized")
    assert_problem(await client.get("/v1/users/me"), 401, "unauthorized")
    assert_problem(await client.get("/v1/users/me", headers={"Authorization": f"Basic {token}"}), 401, "unauthorized")
    # the genuine token still works
    assert (await client.get("/v1/users/me", headers=bearer(token))).json()["user_id"] == user_id


async def test_me_for_a_user_that_does_not_exist(client, settings, keypair):
    token = TokenSigner.from_file(keypair[0], settings.jwt_issuer, settings.jwt_audience).issue(str(uuid.uuid4()))
    assert_problem(await client.get("/v1/users/me", headers=bearer(token)), 404, "user_not_found")
    odd = TokenSigner.from_file(keypair[0], settings.jwt_issuer, settings.jwt_audience).issue("not-a-uuid")
    assert_problem(await client.get("/v1/users/me", headers=bearer(odd)), 401, "unauthorized")


async def test_bootstrap_admin_can_log_in(client, settings, keypair):
    admin_login, admin_password = settings.admin_bootstrap_login, settings.admin_bootstrap_password.get_secret_value()
    response = await client.post("/v1/admin/sessions", json={"login": admin_login.upper(), "password": admin_password})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["roles"] == ["super_admin"]
    assert body["token_type"] == "bearer"
    principal = TokenVerifier.from_file(keypair[1], settings.jwt_issuer, settings.jwt_audience).verify(
        body["access_token"]
    )
    assert principal.kind == "admin"
    assert principal.roles == frozenset({"super_admin"})
    assert principal.subject == body["admin_id"]

    # an admin token is not a user token
    me = await client.get("/v1/users/me", headers=bearer(body["access_token"]))
    assert_problem(me, 403, "forbidden")

    wrong = await client.post("/v1/admin/sessions", json={"login": admin_login, "password": "wrong password"})
    unknown = await client.post("/v1/admin/sessions", json={"login": "nobody-here", "password": admin_password})
    bodies = []
    for r in (wrong, unknown):
        assert_problem(r, 401, "invalid_credentials")
        b = r.json()
        b.pop("correlation_id")
        bodies.append(b)
    assert bodies[0] == bodies[1]
    # admin credentials are not user credentials
    r = await client.post("/v1/sessions", json={"login": admin_login, "password": admin_password})
    assert_problem(r, 401, "invalid_credentials")


async def test_bootstrap_never_overwrites_an_existing_admin(client, settings, database_url):
    admin_login, admin_password = settings.admin_bootstrap_login, settings.admin_bootstrap_password.get_secret_value()
    changed = settings.model_copy(
        update={"admin_bootstrap_password": type(settings.admin_bootstrap_password)("a-different-password")}
    )
    async with app_client(create_app(changed)) as second:
        ok = await second.post("/v1/admin/sessions", json={"login": admin_login, "password": admin_password})
        assert ok.status_code == 200, ok.text
        refused = await second.post(
            "/v1/admin/sessions", json={"login": admin_login, "password": "a-different-password"}
        )
        assert_problem(refused, 401, "invalid_credentials")
    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM admins") == 1
    finally:
        await conn.close()


async def test_token_response_is_not_cacheable(client):
    await register(client)
    response = await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD})
    assert response.headers["cache-control"] == "no-store"


# === codes, logins by code / e-mail / user name, refresh, logout, lockout, profile, terms ===

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


# --- codes -----------------------------------------------------------------------------------------


async def test_code_is_never_in_the_answer_and_registration_needs_it(client):
    response = await client.post("/v1/sms-codes", json={"phone": PHONE, "purpose": "register"})
    assert response.status_code == 202, response.text
    assert set(response.json()) == {"expires_in", "resend_after"}
    (message,) = await outbox(client, PHONE)
    assert message["code"] not in response.text
    # no code, a wrong code, and a code for another number are all refused; nothing is registered
    body = registration()
    del body["sms_code"]
    assert_problem(await client.post("/v1/users", json=body), 422, "validation_error")
    wrong = "000000" if message["code"] != "000000" else "111111"
    assert_problem(await client.post("/v1/users", json=registration(sms_code=wrong)), 400, "code_invalid")
    assert_problem(
        await client.post("/v1/users", json=registration(phone=OTHER, sms_code=message["code"])), 400, "code_invalid"
    )
    ok = await client.post("/v1/users", json=registration(sms_code=message["code"]))
    assert ok.status_code == 201, ok.text
    # a code works once
    again = await client.post("/v1/users", json=registration(sms_code=message["code"]))
    assert_problem(again, 400, "code_invalid")


async def test_code_attempts_are_limited(client, settings):
    code = await sms_code(client)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(settings.code_max_attempts):
        assert_problem(await client.post("/v1/users", json=registration(sms_code=wrong)), 400, "code_invalid")
    # the right code no longer helps once the attempts are used up
    assert_problem(await client.post("/v1/users", json=registration(sms_code=code)), 400, "code_invalid")


async def test_code_expires_and_only_the_newest_counts(client, database_url):
    first = await sms_code(client)
    second = await sms_code(client)
    if first != second:
        assert_problem(await client.post("/v1/users", json=registration(sms_code=first)), 400, "code_invalid")
    await sql(database_url, "UPDATE verification_codes SET expires_at = now() - interval '1 second'")
    assert_problem(await client.post("/v1/users", json=registration(sms_code=second)), 400, "code_invalid")
    await register(client)  # a fresh code works


async def test_codes_are_stored_hashed(client, database_url):
    code = await sms_code(client)
    rows = await sql(database_url, "SELECT code_hash FROM verification_codes")
    assert len(rows) == 1 and code not in rows[0]["code_hash"] and len(rows[0]["code_hash"]) == 64


async def test_resend_interval_answers_429_with_retry_after(client, settings):
    strict = settings.model_copy(update={"code_resend_interval_s": 60})
    async with app_client(create_app(strict)) as c:
        assert (await c.post("/v1/sms-codes", json={"phone": PHONE, "purpose": "register"})).status_code == 202
        response = await c.post("/v1/sms-codes", json={"phone": PHONE, "purpose": "login"})
        problem = assert_problem(response, 429, "rate_limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert problem["retry_after_s"] == int(response.headers["retry-after"])
        # another number is not affected
        assert (await c.post("/v1/sms-codes", json={"phone": OTHER, "purpose": "register"})).status_code == 202


async def test_per_number_and_per_client_quotas(client, settings):
    strict = settings.model_copy(update={"code_max_per_destination": 2, "code_max_per_client": 3})
    async with app_client(create_app(strict)) as c:
        for _ in range(2):
            assert (await c.post("/v1/sms-codes", json={"phone": PHONE, "purpose": "register"})).status_code == 202
        response = await c.post("/v1/sms-codes", json={"phone": PHONE, "purpose": "register"})
        assert_problem(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) > 3000  # until the oldest leaves the hour window
        assert (await c.post("/v1/sms-codes", json={"phone": OTHER, "purpose": "register"})).status_code == 202
        # the client address has now asked 3 times (+ the refused one is not counted)
        response = await c.post("/v1/sms-codes", json={"phone": "+8613700137000", "purpose": "register"})
        assert_problem(response, 429, "rate_limited")
        assert "retry-after" in response.headers


async def test_sandbox_delivery_can_fail(client, settings):
    failing = settings.model_copy(update={"sms_sandbox_fail_numbers": [OTHER]})
    async with app_client(create_app(failing)) as c:
        response = await c.post("/v1/sms-codes", json={"phone": OTHER, "purpose": "register"})
        assert_problem(response, 502, "code_delivery_failed")
        (message,) = await outbox(c, OTHER)
        assert message["status"] == "failed"
        # an undelivered code cannot be used
        body = registration(phone=OTHER, sms_code=message["code"])
        assert_problem(await c.post("/v1/users", json=body), 400, "code_invalid")
        # a fully failing provider
        flaky = settings.model_copy(update={"sms_sandbox_failure_rate": 1.0})
    async with app_client(create_app(flaky)) as c:
        assert_problem(
            await c.post("/v1/sms-codes", json={"phone": PHONE, "purpose": "login"}), 502, "code_delivery_failed"
        )


async def test_dev_outbox_is_for_admins_and_not_in_production(client, settings):
    assert_problem(await client.get("/v1/dev/messages"), 401, "unauthorized")
    await register(client)
    user = await login(client)
    assert_problem(await client.get("/v1/dev/messages", headers=bearer(user["access_token"])), 403, "forbidden")
    production = settings.model_copy(update={"pb_env": "production"})
    paths = set(create_app(production).openapi()["paths"])
    assert "/v1/sms-codes" in paths and "/v1/dev/messages" not in paths


async def test_bad_code_requests_are_422(client):
    for body in (
        {"phone": "12", "purpose": "register"},
        {"phone": PHONE, "purpose": "shopping"},
        {"phone": PHONE},
        [],
    ):
        assert_problem(await client.post("/v1/sms-codes", json=body), 422, "validation_error")
    for code in ("12345", "abcdef", "1234567", ""):
        problem = assert_problem(
            await client.post("/v1/users", json=registration(sms_code=code)), 422, "validation_error"
        )
        assert any(e["loc"][-1] == "sms_code" for e in problem["errors"])


# --- logins ----------------------------------------------------------------------------------------


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
    from kit.testing import app_client, truncate_all
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


# --- refresh, logout -------------------------------------------------------------------------------


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/sessions/refresh", json={"refresh_token": token})


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


# --- administration ----------------------------------------------------------------------------


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


async def test_admin_block_and_unblock_a_user(client, database_url):
    user_id = (await register(client))["user_id"]
    session = await login(client)
    support = await new_admin(client, "support")

    found = await client.get("/v1/admin/users", params={"q": "138001"}, headers=bearer(support))
    assert found.status_code == 200, found.text
    assert [u["user_id"] for u in found.json()] == [user_id]
    assert (await client.get("/v1/admin/users", params={"q": "%"}, headers=bearer(support))).json() == []
    viewed = await client.get(f"/v1/admin/users/{user_id}", headers=bearer(support))
    assert viewed.json()["status"] == "active"

    blocked = await client.post(
        f"/v1/admin/users/{user_id}/block", json={"reason": "fraud report #42"}, headers=bearer(support)
    )
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["status"] == "blocked"
    again = await client.post(f"/v1/admin/users/{user_id}/block", json={"reason": "x"}, headers=bearer(support))
    assert_problem(again, 409, "user_already_blocked")
    # the user's sessions ended, and a correct login says why it is refused
    assert_problem(await client.get("/v1/users/me", headers=bearer(session["access_token"])), 401, "token_revoked")
    assert_problem(await refresh(client, session["refresh_token"]), 401, "invalid_refresh_token")
    assert_problem(
        await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD}), 403, "account_blocked"
    )
    assert_problem(
        await client.post("/v1/sessions", json={"login": PHONE, "password": "wrong password"}),
        401,
        "invalid_credentials",
    )
    assert (await client.get("/v1/admin/users", params={"status": "blocked"}, headers=bearer(support))).json()[0][
        "user_id"
    ] == user_id

    unblocked = await client.post(
        f"/v1/admin/users/{user_id}/unblock", json={"reason": "cleared"}, headers=bearer(support)
    )
    assert unblocked.status_code == 200 and unblocked.json()["status"] == "active"
    assert_problem(
        await client.post(f"/v1/admin/users/{user_id}/unblock", json={"reason": "x"}, headers=bearer(support)),
        409,
        "user_not_blocked",
    )
    await login(client)

    # events went out through the outbox, in order (the ended session's token ids first, for every service)
    rows = await sql(database_url, "SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", user_id)
    assert [r["event_type"] for r in rows] == [
        "user.user.registered",
        "user.session.revoked",
        "user.user.blocked",
        "user.user.unblocked",
    ]

    # every action is in the audit log, queryable
    root = await admin_token(client)
    log_rows = (await client.get("/v1/admin/audit-log", params={"target_id": user_id}, headers=bearer(root))).json()
    assert [r["action"] for r in log_rows] == ["user.unblock", "user.block", "user.view"]
    assert log_rows[1]["reason"] == "fraud report #42" and log_rows[1]["admin_roles"] == ["support"]
    searches = (await client.get("/v1/admin/audit-log", params={"action": "user.search"}, headers=bearer(root))).json()
    assert len(searches) == 3
    created = (await client.get("/v1/admin/audit-log", params={"action": "admin.create"}, headers=bearer(root))).json()
    assert created[0]["details"] == {"after": {"login": "support-1", "role": "support", "must_change_password": False}}


async def test_staff_see_personal_data_masked_and_a_reveal_is_audited(client, database_url):
    user_id = (await register(client))["user_id"]
    support = await new_admin(client, "support")  # holds users:pii
    operator = await new_admin(client, "operator")  # does not
    for token in (support, operator):
        (found,) = (await client.get("/v1/admin/users", params={"q": "138001"}, headers=bearer(token))).json()
        assert (found["phone"], found["display_name"], found["masked"]) == ("+86138****8000", "小*", True)
        viewed = (await client.get(f"/v1/admin/users/{user_id}", headers=bearer(token))).json()
        assert PHONE not in json.dumps(viewed) and viewed["masked"] is True
    refused = await client.get(f"/v1/admin/users/{user_id}", params={"reveal": "true"}, headers=bearer(operator))
    assert_problem(refused, 403, "forbidden")
    revealed = (
        await client.get(f"/v1/admin/users/{user_id}", params={"reveal": "true"}, headers=bearer(support))
    ).json()
    assert (revealed["phone"], revealed["display_name"], revealed["masked"]) == (PHONE, "小明", False)
    rows = await sql(database_url, "SELECT action, admin_roles FROM admin_actions WHERE action = 'user.pii_reveal'")
    assert [(r["action"], r["admin_roles"]) for r in rows] == [("user.pii_reveal", "support")]


async def test_admin_permissions(client):
    user_id = (await register(client))["user_id"]
    user = (await login(client))["access_token"]
    analyst = await new_admin(client, "analyst")
    finance = await new_admin(client, "finance")
    support = await new_admin(client, "support")
    block = f"/v1/admin/users/{user_id}/block"
    for token in (user, analyst, finance):
        assert_problem(await client.post(block, json={"reason": "x"}, headers=bearer(token)), 403, "forbidden")
    assert_problem(await client.get("/v1/admin/users", headers=bearer(analyst)), 403, "forbidden")
    assert (await client.get("/v1/admin/users", headers=bearer(finance))).status_code == 200
    for token in (support, finance, analyst):
        assert_problem(await client.get("/v1/admin/audit-log", headers=bearer(token)), 403, "forbidden")
        r = await client.post(
            "/v1/admin/admins",
            json={"login": "sneaky", "password": "admin-pass-123", "role": "super_admin"},
            headers=bearer(token),
        )
        assert_problem(r, 403, "forbidden")
    assert_problem(await client.get("/v1/admin/users"), 401, "unauthorized")
    # the dev outbox is for roles with dev:read (support, super_admin)
    assert (await client.get("/v1/dev/messages", headers=bearer(support))).status_code == 200
    assert_problem(await client.get("/v1/dev/messages", headers=bearer(analyst)), 403, "forbidden")


async def test_admin_input_is_validated(client):
    root = await admin_token(client)
    headers = bearer(root)
    assert_problem(await client.get("/v1/admin/users/not-a-uuid", headers=headers), 422, "validation_error")
    assert_problem(await client.get(f"/v1/admin/users/{uuid.uuid4()}", headers=headers), 404, "user_not_found")
    assert_problem(
        await client.post(f"/v1/admin/users/{uuid.uuid4()}/block", json={"reason": "x"}, headers=headers),
        404,
        "user_not_found",
    )
    user_id = (await register(client))["user_id"]
    assert_problem(
        await client.post(f"/v1/admin/users/{user_id}/block", json={"reason": ""}, headers=headers),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post(
            "/v1/admin/admins", json={"login": "x1", "password": "admin-pass-123", "role": "king"}, headers=headers
        ),
        422,
        "validation_error",
    )
    body = {"login": "ops-1", "password": "admin-pass-123", "role": "operator"}
    assert (await client.post("/v1/admin/admins", json=body, headers=headers)).status_code == 201
    assert_problem(await client.post("/v1/admin/admins", json=body, headers=headers), 409, "admin_login_taken")
    assert_problem(
        await client.get("/v1/admin/users", params={"status": "weird"}, headers=headers), 422, "validation_error"
    )


# --- eligibility audit ---------------------------------------------------------------------------


async def test_eligibility_audit_rejects_with_reasons_and_records_every_decision(client, settings, database_url):
    strict = settings.model_copy(
        update={
            "eligibility_blocked_numbers": ["+86170"],
            "eligibility_credit_blacklist": [OTHER],
            "eligibility_min_age_years": 18,
        }
    )
    today = datetime.now(UTC).date()
    async with app_client(create_app(strict)) as c:
        blocked = "+8617012345678"
        r = await c.post("/v1/users", json=registration(phone=blocked, sms_code=await sms_code(c, blocked)))
        assert assert_problem(r, 403, "registration_rejected")["reasons"] == ["number_blocked"]
        r = await c.post("/v1/users", json=registration(phone=OTHER, sms_code=await sms_code(c, OTHER)))
        assert assert_problem(r, 403, "registration_rejected")["reasons"] == ["credit_blacklisted"]
        young = today.replace(year=today.year - 17).isoformat() if today.month != 2 or today.day != 29 else "2010-03-01"
        r = await c.post("/v1/users", json=registration(birth_date=young, sms_code=await sms_code(c)))
        assert assert_problem(r, 403, "registration_rejected")["reasons"] == ["under_minimum_age"]
        adult = f"{today.year - 30}-01-15"
        r = await c.post("/v1/users", json=registration(birth_date=adult, sms_code=await sms_code(c)))
        assert r.status_code == 201, r.text
        r = await c.post("/v1/users", json=registration(sms_code=await sms_code(c)))
        assert assert_problem(r, 409, "phone_taken")["reasons"] == ["duplicate_identity"]
        assert_problem(
            await c.post("/v1/users", json=registration(birth_date="not-a-date", sms_code="123456")),
            422,
            "validation_error",
        )
    rows = await sql(
        database_url, "SELECT phone, accepted, reasons, rules, user_id FROM eligibility_decisions ORDER BY id"
    )
    assert [(r["accepted"], json.loads(r["reasons"])) for r in rows] == [
        (False, ["number_blocked"]),
        (False, ["credit_blacklisted"]),
        (False, ["under_minimum_age"]),
        (True, []),
        (False, ["duplicate_identity"]),
    ]
    assert rows[3]["user_id"] is not None and json.loads(rows[3]["rules"])["min_age_years"] == 18
    # rejected registrations created nobody and sent no event
    assert len(await sql(database_url, "SELECT 1 FROM users")) == 1
    (registered,) = await sql(database_url, "SELECT payload FROM outbox")
    # analytics' age bands get the birth year, never the date
    data = Envelope.model_validate_json(bytes(registered["payload"])).data
    assert isinstance(data, UserRegistered) and data.birth_year == today.year - 30
    assert adult not in bytes(registered["payload"]).decode()


# --- deregistration ------------------------------------------------------------------------------


async def emit(*events: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap())
    await producer.start()
    try:
        for data in events:
            envelope = new_event(data, key=str(data.rental_id), producer="test")
            await producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=envelope.key.encode())
    finally:
        await producer.stop()


async def wait_obligation(database_url: str, rental_id: uuid.UUID, **expected: Any) -> None:
    deadline = time.monotonic() + 90
    while True:
        rows = await sql(
            database_url, "SELECT state, fee_fen, paid FROM rental_obligations WHERE rental_id = $1", rental_id
        )
        if rows and all(rows[0][k] == v for k, v in expected.items()):
            return
        assert time.monotonic() < deadline, f"projection of {rental_id} never reached {expected}: {rows}"
        await asyncio.sleep(0.2)


async def test_deregistration(settings, database_url):
    await truncate_all(database_url)
    # Its own consumer group, so no member left behind by an earlier run delays the assignment.
    with_projection = settings.model_copy(
        update={"obligations_consumer": True, "kafka_consumer_group": f"user-svc-test-{uuid.uuid4().hex[:8]}"}
    )
    app = create_app(with_projection)
    async with app_client(app) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                await app.state.runtime.readiness_checks["consumers"]()
                break
            except RuntimeError:
                assert time.monotonic() < deadline, "the obligations consumer was never assigned partitions"
                await asyncio.sleep(0.2)
        await _deregistration(client, settings, database_url)


async def _deregistration(client, settings, database_url):
    user_id = uuid.UUID((await register(client, display_name="Ming"))["user_id"])
    session = await login(client)
    headers = bearer(session["access_token"])
    now = datetime.now(UTC)
    rental_id = uuid.uuid4()
    price = {"period_minutes": 30, "price_per_period_fen": 150, "free_minutes": 0, "daily_cap_fen": 2000}
    started = RentalStarted(
        rental_id=rental_id, user_id=user_id, bank_id="PB-1", cabinet_id="CAB-1", slot=1, started_at=now, price=price
    )
    await emit(started)
    await wait_obligation(database_url, rental_id, state="active")
    deregister = "/v1/users/me/deregistration"
    assert_problem(await client.post(deregister, json={"password": PASSWORD}, headers=headers), 409, "rental_active")

    ended = RentalEnded(
        rental_id=rental_id,
        user_id=user_id,
        bank_id="PB-1",
        start_cabinet_id="CAB-1",
        return_cabinet_id="CAB-2",
        started_at=now,
        ended_at=now + timedelta(minutes=20),
        duration_seconds=1200,
        fee_fen=150,
    )
    await emit(ended)
    await wait_obligation(database_url, rental_id, state="ended", paid=False)
    problem = assert_problem(
        await client.post(deregister, json={"password": PASSWORD}, headers=headers), 409, "debt_unpaid"
    )
    assert problem["unpaid_fen"] == 150

    settled = ChargeSettled(
        charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user_id, amount_fen=150, balance_fen=0, settled_at=now
    )
    await emit(settled)
    await wait_obligation(database_url, rental_id, paid=True)
    # a second unpaid rental that support waives no longer counts as owed
    waived_id = uuid.uuid4()
    await emit(ended.model_copy(update={"rental_id": waived_id, "fee_fen": 300}))
    await wait_obligation(database_url, waived_id, state="ended", paid=False)
    problem = assert_problem(
        await client.post(deregister, json={"password": PASSWORD}, headers=headers), 409, "debt_unpaid"
    )
    assert problem["unpaid_fen"] == 300
    await emit(DebtWaived(rental_id=waived_id, user_id=user_id, waived_fen=300, at=now))
    await wait_obligation(database_url, waived_id, paid=True)
    assert_problem(
        await client.post(deregister, json={"password": "wrong password"}, headers=headers), 401, "invalid_credentials"
    )
    done = await client.post(deregister, json={"password": PASSWORD}, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["user_id"] == str(user_id)

    # every token ended; the account no longer logs in
    assert_problem(await client.get("/v1/users/me", headers=headers), 401, "token_revoked")
    assert_problem(await refresh(client, session["refresh_token"]), 401, "invalid_refresh_token")
    assert_problem(
        await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD}), 401, "invalid_credentials"
    )
    rows = await sql(database_url, "SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", str(user_id))
    assert [r["event_type"] for r in rows] == ["user.user.registered", "user.session.revoked", "user.user.deregistered"]

    # the number registers again, as a new user
    again = await register(client)
    assert again["user_id"] != str(user_id)

    # the anonymisation job clears personal data after the retention period (here: none)
    (row,) = await sql(database_url, "SELECT former_phone, display_name FROM users WHERE id = $1", user_id)
    assert row["former_phone"] == PHONE and row["display_name"] == "Ming"
    quick = settings.model_copy(update={"deregistration_retention_s": 0, "anonymise_interval_s": 0.1})
    async with app_client(create_app(quick)):
        deadline = time.monotonic() + 10
        while (await sql(database_url, "SELECT anonymised_at FROM users WHERE id = $1", user_id))[0][
            "anonymised_at"
        ] is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    (row,) = await sql(
        database_url,
        "SELECT phone, former_phone, display_name, password_hash, status FROM users WHERE id = $1",
        user_id,
    )
    assert row["former_phone"] is None and row["display_name"] is None and row["password_hash"] == ""
    assert row["phone"].startswith("~") and row["status"] == "deregistered"
    decisions = await sql(database_url, "SELECT phone FROM eligibility_decisions WHERE user_id = $1", user_id)
    assert [d["phone"] for d in decisions] == [""]  # the registration's decision stays, without the number


# --- API keys for third parties -----------------------------------------------------------------


async def test_api_keys_give_scoped_client_tokens(client, settings, keypair):
    root = bearer(await admin_token(client))
    created = await client.post(
        "/v1/admin/api-keys",
        json={"name": "supervision platform", "scopes": ["stats:read", "rentals:read"]},
        headers=root,
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["api_key"].startswith("pbk_") and key["scopes"] == ["rentals:read", "stats:read"]

    exchanged = await client.post("/v1/client-sessions", json={"api_key": key["api_key"]})
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["scope"] == "rentals:read stats:read"
    principal = TokenVerifier.from_file(keypair[1], settings.jwt_issuer, settings.jwt_audience).verify(
        exchanged.json()["access_token"]
    )
    assert principal.kind == "client" and principal.can("stats:read") and not principal.can("users:read")
    token = bearer(exchanged.json()["access_token"])
    # a client token is neither an administrator's nor a user's
    assert_problem(await client.get("/v1/admin/users", headers=token), 403, "forbidden")
    assert_problem(await client.get("/v1/users/me", headers=token), 403, "forbidden")

    # wrong or revoked keys look the same
    bad = [f"{key['api_key']}x", "pbk_nothing", "", "x" * 300]
    for api_key in bad[:2]:
        assert_problem(await client.post("/v1/client-sessions", json={"api_key": api_key}), 401, "invalid_credentials")
    for api_key in bad[2:]:
        assert_problem(await client.post("/v1/client-sessions", json={"api_key": api_key}), 422, "validation_error")
    assert (await client.delete(f"/v1/admin/api-keys/{key['key_id']}", headers=root)).status_code == 204
    assert_problem(
        await client.post("/v1/client-sessions", json={"api_key": key["api_key"]}), 401, "invalid_credentials"
    )
    assert_problem(await client.delete(f"/v1/admin/api-keys/{key['key_id']}", headers=root), 404, "api_key_not_found")
    listed = (await client.get("/v1/admin/api-keys", headers=root)).json()
    assert listed[0]["revoked"] is True and "api_key" not in listed[0]

    # only known scopes; only administrators allowed to manage clients
    r = await client.post("/v1/admin/api-keys", json={"name": "x", "scopes": ["root:everything"]}, headers=root)
    assert "unknown_scope" in {e["type"] for e in assert_problem(r, 422, "validation_error")["errors"]}
    support = bearer(await new_admin(client, "support"))
    assert_problem(
        await client.post("/v1/admin/api-keys", json={"name": "x", "scopes": ["stats:read"]}, headers=support),
        403,
        "forbidden",
    )
    actions = [r["action"] for r in (await client.get("/v1/admin/audit-log", headers=root)).json()]
    assert "api_key.create" in actions and "api_key.revoke" in actions


async def test_send_sms_commands_text_the_users_phone(settings, database_url):
    """notify-svc's fallback for a critical message: user-svc texts the number only it holds."""
    await truncate_all(database_url)
    with_texts = settings.model_copy(
        update={"sms_commands_consumer": True, "kafka_consumer_group": f"user-svc-test-{uuid.uuid4().hex[:8]}"}
    )
    app = create_app(with_texts)
    async with app_client(app) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                await app.state.runtime.readiness_checks["consumers"]()
                break
            except RuntimeError:
                assert time.monotonic() < deadline, "the texts consumer was never assigned partitions"
                await asyncio.sleep(0.2)
        user_id = uuid.UUID((await register(client))["user_id"])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap())
        await producer.start()
        try:
            for data in (
                SendSms(user_id=uuid.uuid4(), text="nobody", reason="push_undelivered"),
                SendSms(user_id=user_id, text="Payment failed: please pay manually", reason="push_undelivered"),
            ):
                envelope = new_event(data, key=str(data.user_id), producer="notify-svc")
                await producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=envelope.key.encode())
                if data.user_id == user_id:
                    await producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=envelope.key.encode())
        finally:
            await producer.stop()

        async def texted() -> list[dict[str, Any]]:
            return [m for m in await outbox(client, PHONE) if m["body"] == "Payment failed: please pay manually"]

        deadline = time.monotonic() + 20
        while not await texted():
            assert time.monotonic() < deadline, "the text never reached the sandbox provider"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the redelivered copy had its chance
        assert len(await texted()) == 1


async def test_regulator_key_uses_client_credentials_and_holds_supervision_scopes_only(client, settings, keypair):
    root = bearer(await admin_token(client))
    for scopes in (["supervision:read", "stats:read"], ["supervision:region:440300"], ["supervision:region:44030"]):
        response = await client.post("/v1/admin/api-keys", json={"name": "regulator", "scopes": scopes}, headers=root)
        assert_problem(response, 422, "validation_error")
    created = await client.post(
        "/v1/admin/api-keys",
        json={"name": "Shenzhen regulator", "scopes": ["supervision:read", "supervision:region:440300"]},
        headers=root,
    )
    assert created.status_code == 201, created.text
    key_part, _, secret = created.json()["api_key"].partition(".")
    form = {"grant_type": "client_credentials", "client_id": key_part, "client_secret": secret}
    answer = await client.post("/v1/oauth/token", data=form)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    assert body["scope"] == "supervision:read supervision:region:440300"
    assert answer.headers["cache-control"] == "no-store"
    principal = TokenVerifier.from_file(keypair[1], settings.jwt_issuer, settings.jwt_audience).verify(
        body["access_token"]
    )
    assert principal.kind == "client" and principal.supervision_regions == {"440300"}
    assert not principal.can("stats:read") and not principal.can("users:read")
    # HTTP Basic works too; a narrower scope may be asked for, a wider one not
    basic = httpx.BasicAuth(key_part, secret)
    narrower = await client.post(
        "/v1/oauth/token", data={"grant_type": "client_credentials", "scope": "supervision:read"}, auth=basic
    )
    assert narrower.status_code == 200 and narrower.json()["scope"] == "supervision:read"
    wider = await client.post(
        "/v1/oauth/token", data={"grant_type": "client_credentials", "scope": "supervision:read stats:read"}, auth=basic
    )
    assert_problem(wider, 400, "invalid_scope")
    for wrong in (
        {**form, "client_secret": secret + "x"},
        {**form, "client_id": "pbk_0"},
        {**form, "client_secret": ""},
    ):
        assert_problem(await client.post("/v1/oauth/token", data=wrong), 401, "invalid_client")
    token = bearer(body["access_token"])
    assert_problem(await client.get("/v1/admin/users", headers=token), 403, "forbidden")
    assert_problem(await client.get("/v1/users/me", headers=token), 403, "forbidden")
