"""Push to the phone: tokens per user and platform, a push per inbox message with per-token results,
invalid tokens unregistered, passing failures retried, SMS fallback (via user-svc) for a critical
message no phone received."""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.events import ChargeFailed, SendSms
from notify_svc.push.provider import (
    MAX_PAYLOAD_BYTES,
    PushMessage,
    PushStatus,
    SandboxPushProvider,
    fit,
)

pytestmark = pytest.mark.integration


async def register(client, headers, token: str, platform: str = "android") -> Any:
    return await client.put("/v1/push-tokens", headers=headers, json={"platform": platform, "token": token})


async def pushes(client, staff, user: uuid.UUID, wait, *, done: int = 1) -> list[Any]:
    async def check() -> list[Any] | None:
        items = (await client.get(f"/v1/admin/users/{user}/pushes", headers=staff())).json()["items"]
        finished = [j for j in items if j["outcome"] is not None]
        return items if len(finished) >= done else None

    result: list[Any] = await wait(check, what=f"{done} finished pushes")
    return result


async def test_tokens_register_move_and_are_limited(client, auth):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    assert (await register(client, auth(alice), "fcm:token-0001-abcdef")).status_code == 204
    assert (await register(client, auth(alice), "fcm:token-0001-abcdef")).status_code == 204  # again: still one
    mine = (await client.get("/v1/push-tokens", headers=auth(alice))).json()["items"]
    assert [(t["platform"], t["token_suffix"]) for t in mine] == [("android", "1-abcdef")]
    # The phone changes hands: the token moves to whoever registers it last.
    assert (await register(client, auth(bob), "fcm:token-0001-abcdef", "ios")).status_code == 204
    assert (await client.get("/v1/push-tokens", headers=auth(alice))).json()["items"] == []
    for n in range(9):
        assert (await register(client, auth(bob), f"apns-token-{n:04d}-xyz", "ios")).status_code == 204
    response = await register(client, auth(bob), "apns-token-9999-xyz", "ios")
    assert (response.status_code, response.json()["code"]) == (409, "too_many_devices")
    removed = await client.post(
        "/v1/push-tokens/remove", headers=auth(bob), json={"platform": "ios", "token": "apns-token-0000-xyz"}
    )
    assert removed.status_code == 204
    again = await client.post(
        "/v1/push-tokens/remove", headers=auth(alice), json={"platform": "ios", "token": "apns-token-0001-xyz"}
    )
    assert (again.status_code, again.json()["code"]) == (404, "push_token_not_found")
    for body in (
        {"platform": "web", "token": "abcdefgh123"},
        {"platform": "ios", "token": "short"},
        {"platform": "ios", "token": "has spaces in it"},
        {"platform": "ios", "token": "<script>alert(1)</script>"},
    ):
        assert (await client.put("/v1/push-tokens", headers=auth(alice), json=body)).status_code == 422


async def test_a_staff_reply_is_pushed_and_an_invalid_token_unregistered(client, auth, staff, wait):
    user = uuid.uuid4()
    await register(client, auth(user), "fcm:good-token-12345678")
    await register(client, auth(user), "invalid-gone-87654321", "ios")
    ticket = (
        await client.post("/v1/tickets", headers=auth(user), json={"kind": "app_problem", "text": "login loops"})
    ).json()
    await client.post(f"/v1/admin/tickets/{ticket['ticket_id']}/replies", headers=staff(), json={"text": "Fixed!"})

    jobs = await pushes(client, staff, user, wait)
    assert len(jobs) == 1
    assert jobs[0]["title"] == "Customer service replied to your app problem"
    assert jobs[0]["outcome"] == "delivered"
    assert jobs[0]["results"] == {"12345678": "ok", "87654321": "invalid_token"}
    tokens = (await client.get("/v1/push-tokens", headers=auth(user))).json()["items"]
    assert [t["token_suffix"] for t in tokens] == ["12345678"]


async def test_a_critical_message_no_phone_received_falls_back_to_sms(client, bus, auth, staff, wait, recorder):
    user = uuid.uuid4()  # no phone registered for push
    failed = ChargeFailed(
        charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=450, reason="insufficient_balance"
    )
    await bus.publish(failed, key=str(user))
    jobs = await pushes(client, staff, user, wait)
    assert (jobs[0]["title"], jobs[0]["critical"], jobs[0]["outcome"]) == ("Payment failed", True, "sms_fallback")
    sms = await recorder.wait_for(
        lambda e: isinstance(e.data, SendSms) and e.data.user_id == user, what="user.send_sms"
    )
    assert isinstance(sms.data, SendSms)
    assert sms.key == str(user)
    assert sms.data.text.startswith("Payment failed: We could not collect ¥4.50")

    # A message that is not critical, to a phone that cannot be reached now: kept and tried again.
    other = uuid.uuid4()
    await register(client, auth(other), "flaky-token-00000001")
    ticket = (await client.post("/v1/tickets", headers=auth(other), json={"kind": "other", "text": "hello"})).json()
    await client.post(f"/v1/admin/tickets/{ticket['ticket_id']}/replies", headers=staff(), json={"text": "hi"})

    async def attempted() -> list[Any] | None:
        items = (await client.get(f"/v1/admin/users/{other}/pushes", headers=staff())).json()["items"]
        return items if items and items[0]["attempts"] >= 1 else None

    job = (await wait(attempted, what="a first attempt"))[0]
    assert job["outcome"] is None
    assert job["results"] == {"00000001": "unavailable"}
    assert not [e for e in recorder.seen if isinstance(e.data, SendSms) and e.data.user_id == other]


async def test_bad_staff_requests(client, auth, staff):
    assert (await client.get(f"/v1/admin/users/{uuid.uuid4()}/pushes", headers=auth(uuid.uuid4()))).status_code == 403
    analyst = staff(roles=("analyst",))
    assert (await client.get(f"/v1/admin/users/{uuid.uuid4()}/pushes", headers=analyst)).status_code == 403
    assert (await client.get("/v1/admin/users/nope/pushes", headers=staff())).status_code == 422


def test_payload_fits_the_limit():
    body = "é" * 10_000
    short = fit("Title", body, {"message_id": str(uuid.uuid4())})
    assert short.endswith("…")
    message = PushMessage("t", "ios", "Title", short, {"message_id": str(uuid.uuid4())})
    assert len(message.payload()) <= MAX_PAYLOAD_BYTES
    assert fit("Title", "short", {}) == "short"


async def test_the_sandbox_answers_per_token_with_latency():
    sandbox = SandboxPushProvider(latency_s=(0.05, 0.05))
    started = datetime.now(UTC)
    results = await sandbox.send(
        [
            PushMessage("ok-token-1", "ios", "T", "B"),
            PushMessage("invalid-token-2", "ios", "T", "B"),
            PushMessage("flaky-token-3", "android", "T", "B"),
            PushMessage("ok-token-4", "android", "T", "x" * 5000),
        ]
    )
    assert (datetime.now(UTC) - started).total_seconds() >= 0.04
    assert [r.status for r in results] == [
        PushStatus.OK,
        PushStatus.INVALID_TOKEN,
        PushStatus.UNAVAILABLE,
        PushStatus.PAYLOAD_TOO_LARGE,
    ]
    assert [d.token for d in sandbox.delivered] == ["ok-token-1"]
    await asyncio.sleep(0)
