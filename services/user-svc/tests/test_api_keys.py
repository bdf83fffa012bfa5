"""API keys for third parties, SMS commands, the regulator's client credentials."""

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contracts import new_event
from contracts.events import SendSms
from kit.auth import TokenVerifier
from kit.testing import app_client, kafka_bootstrap, truncate_all
from user_svc.main import create_app

from .support import (
    PHONE,
    admin_token,
    assert_problem,
    bearer,
    new_admin,
    outbox,
    register,
)

pytestmark = pytest.mark.integration


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
