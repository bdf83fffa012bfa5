"""Registration, tokens, bootstrap admin and the registration event."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from contracts import Envelope, Topic
from contracts.events import UserRegistered
from kit.auth import TokenSigner, TokenVerifier
from kit.testing import app_client, kafka_bootstrap, write_keypair
from user_svc.main import create_app
from user_svc.settings import Settings

from .support import (
    PASSWORD,
    PHONE,
    TERMS,
    assert_problem,
    bearer,
    login,
    pg_dsn,
    register,
    registration,
    sms_code,
)

pytestmark = pytest.mark.integration


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
