"""SMS codes: never in the answer, attempts, expiry, hashing, resend interval, quotas, sandbox failures."""

import pytest

from kit.testing import app_client
from user_svc.main import create_app

from .support import OTHER, PHONE, assert_problem, bearer, login, outbox, register, registration, sms_code, sql

pytestmark = pytest.mark.integration


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
