"""Integration: wallet and top-ups through the app, the sandbox notifying it over HTTP (real PG)."""

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


async def assert_books_balance(svc) -> None:
    """The ledger's invariants, read back from the database."""
    unbalanced = await sql(
        svc, "SELECT transaction_id FROM postings GROUP BY transaction_id HAVING sum(amount_fen) <> 0 OR count(*) < 2"
    )
    assert unbalanced == []
    mismatched = await sql(
        svc,
        "SELECT a.id FROM accounts a LEFT JOIN postings p ON p.account_id = a.id "
        "GROUP BY a.id, a.balance_fen HAVING a.balance_fen <> coalesce(sum(p.amount_fen), 0)",
    )
    assert mismatched == []
    negative = await sql(svc, "SELECT id FROM accounts WHERE kind = 'user_balance' AND balance_fen < 0")
    assert negative == []
    total = await sql(svc, "SELECT coalesce(sum(balance_fen), 0) FROM accounts")
    assert total[0][0] == 0


async def test_wallet_is_created_lazily_and_needs_a_token(svc) -> None:
    user = uuid.uuid4()
    assert (await svc.client.get("/v1/wallet")).status_code == 401
    response = await svc.client.get("/v1/wallet", headers=svc.auth(user))
    assert response.status_code == 200
    assert response.json() == {
        "user_id": str(user),
        "balance_fen": 0,
        "currency": "CNY",
        "red_packet_fen": 0,
        # What billing checks before a rental: a new user's credit allows borrowing without a deposit.
        "deposit_held_fen": 0,
        "credit_score": 600,
        "credit_level": "good",
        "borrow_refusal": None,
        "borrow_refusal_detail": None,
    }
    entries = await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))
    assert entries.json() == {"items": [], "next_before": None}


async def test_top_up_is_notified_and_credits_the_wallet(svc) -> None:
    user = uuid.uuid4()
    created = await svc.top_up(user, 2500, "wechat")
    assert created["status"] == "pending" and created["amount_fen"] == 2500 and created["channel"] == "wechat"
    done = await svc.wait_top_up(user, created["top_up_id"])
    assert done["status"] == "succeeded" and done["completed_at"]
    assert await svc.balance(user) == 2500

    entries = (await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))).json()["items"]
    assert len(entries) == 1
    assert entries[0]["kind"] == "top_up"
    assert entries[0]["amount_fen"] == 2500 and entries[0]["balance_after_fen"] == 2500
    assert entries[0]["reference"] == f"topup:{created['top_up_id']}"

    events = await sql(svc, "SELECT event_type, key FROM outbox")
    assert events == [("asset.wallet.topped_up", str(user))]
    clearing = await sql(svc, "SELECT balance_fen FROM accounts WHERE kind = 'provider_clearing:wechat'")
    assert clearing == [(-2500,)]
    await assert_books_balance(svc)


async def test_entries_are_newest_first_and_paged(svc) -> None:
    user = uuid.uuid4()
    for amount in (100, 200, 300):
        top_up = await svc.top_up(user, amount)
        await svc.wait_top_up(user, top_up["top_up_id"])
    page = (await svc.client.get("/v1/wallet/entries?limit=2", headers=svc.auth(user))).json()
    assert [e["amount_fen"] for e in page["items"]] == [300, 200]
    assert [e["balance_after_fen"] for e in page["items"]] == [600, 300]
    rest = (
        await svc.client.get(f"/v1/wallet/entries?limit=2&before={page['next_before']}", headers=svc.auth(user))
    ).json()
    assert [e["amount_fen"] for e in rest["items"]] == [100] and rest["next_before"] is None


async def test_declined_top_up_fails_and_credits_nothing(svc) -> None:
    user = uuid.uuid4()
    created = await svc.top_up(user, 1099)
    done = await svc.wait_top_up(user, created["top_up_id"])
    assert done["status"] == "failed" and done["failure_reason"] == "declined"
    assert await svc.balance(user) == 0
    assert (await sql(svc, "SELECT count(*) FROM postings"))[0][0] == 0
    assert (await sql(svc, "SELECT count(*) FROM outbox"))[0][0] == 0


async def test_idempotency_key(svc) -> None:
    user = uuid.uuid4()
    headers = {**svc.auth(user), "Idempotency-Key": "key-1"}
    first = await svc.client.post("/v1/wallet/top-ups", json={"amount_fen": 500, "channel": "alipay"}, headers=headers)
    again = await svc.client.post("/v1/wallet/top-ups", json={"amount_fen": 500, "channel": "alipay"}, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["top_up_id"] == first.json()["top_up_id"]
    for other in ({"amount_fen": 600, "channel": "alipay"}, {"amount_fen": 500, "channel": "wechat"}):
        reused = await svc.client.post("/v1/wallet/top-ups", json=other, headers=headers)
        assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    missing = await svc.client.post(
        "/v1/wallet/top-ups", json={"amount_fen": 500, "channel": "alipay"}, headers=svc.auth(user)
    )
    assert missing.status_code == 400 and missing.json()["code"] == "idempotency_key_required"
    # The key is the user's own: another user's same key is another top-up.
    stranger = uuid.uuid4()
    theirs = await svc.client.post(
        "/v1/wallet/top-ups",
        json={"amount_fen": 500, "channel": "alipay"},
        headers={**svc.auth(stranger), "Idempotency-Key": "key-1"},
    )
    assert theirs.status_code == 201 and theirs.json()["top_up_id"] != first.json()["top_up_id"]

    await svc.wait_top_up(user, first.json()["top_up_id"])
    await asyncio.sleep(0.4)  # any stray second payment would have landed by now
    assert await svc.balance(user) == 500
    after = await svc.client.post("/v1/wallet/top-ups", json={"amount_fen": 500, "channel": "alipay"}, headers=headers)
    assert after.status_code == 200 and after.json()["status"] == "succeeded"
    assert await svc.balance(user) == 500


async def test_concurrent_requests_with_one_key_make_one_top_up(svc) -> None:
    user = uuid.uuid4()
    headers = {**svc.auth(user), "Idempotency-Key": "same"}
    responses = await asyncio.gather(
        *[
            svc.client.post("/v1/wallet/top-ups", json={"amount_fen": 700, "channel": "alipay"}, headers=headers)
            for _ in range(8)
        ]
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["top_up_id"] for r in responses}) == 1
    await svc.wait_top_up(user, responses[0].json()["top_up_id"])
    await asyncio.sleep(0.3)
    assert await svc.balance(user) == 700


async def test_top_up_validation_and_ownership(svc) -> None:
    user = uuid.uuid4()
    for body in (
        {"amount_fen": 0, "channel": "alipay"},
        {"amount_fen": 1_000_001, "channel": "alipay"},
        {"amount_fen": 100, "channel": "paypal"},
        {"amount_fen": 10.5, "channel": "alipay"},
    ):
        response = await svc.client.post(
            "/v1/wallet/top-ups", json=body, headers={**svc.auth(user), "Idempotency-Key": uuid.uuid4().hex}
        )
        assert response.status_code == 422, body
    created = await svc.top_up(user, 100)
    other = await svc.client.get(f"/v1/wallet/top-ups/{created['top_up_id']}", headers=svc.auth(uuid.uuid4()))
    assert other.status_code == 404 and other.json()["code"] == "top_up_not_found"


def notification(top_up: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = {
        "out_trade_no": top_up["top_up_id"],
        "trade_no": "SBX-TEST-1",
        "amount_fen": top_up["amount_fen"],
        "status": "SUCCESS",
        "paid_at": "2025-01-01T00:00:00+00:00",
        "nonce": uuid.uuid4().hex,
    }
    payload.update(changes)
    return payload


@pytest.fixture
async def quiet_svc(service_factory):
    """The sandbox waits far longer than a test: the tests deliver notifications themselves."""
    async with service_factory(sandbox_pay_delay_min_s=60.0, sandbox_pay_delay_max_s=60.0) as service:
        yield service


async def test_forged_notifications_change_nothing(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 3000)
    alipay, wechat = svc.provider("alipay"), svc.provider("wechat")
    payload = notification(top_up)
    body, headers = alipay.signed_notification(payload)

    forged_body = body.replace(b'"amount_fen":3000', b'"amount_fen":3001')
    attempts = [
        (forged_body, headers),  # tampered after signing
        (body, {**headers, "X-Sandbox-Signature": "00" * 32}),  # wrong signature
        (body, {"Content-Type": "application/json"}),  # unsigned
        wechat.signed_notification(payload),  # signed for another channel
    ]
    for attempt_body, attempt_headers in attempts:
        response = await svc.client.post("/v1/payments/alipay/notify", content=attempt_body, headers=attempt_headers)
        assert response.status_code == 400 and response.json()["code"] == "invalid_signature"
    assert (await svc.client.post("/v1/payments/paypal/notify", content=body, headers=headers)).status_code == 400

    # Authentic but for another amount: refused, nothing changes either.
    wrong_body, wrong_headers = alipay.signed_notification(notification(top_up, amount_fen=30000))
    response = await svc.client.post("/v1/payments/alipay/notify", content=wrong_body, headers=wrong_headers)
    assert response.status_code == 400 and response.json()["code"] == "amount_mismatch"
    # Authentic, but sent to the other channel's endpoint.
    w_body, w_headers = wechat.signed_notification(payload)
    response = await svc.client.post("/v1/payments/wechat/notify", content=w_body, headers=w_headers)
    assert response.status_code == 400 and response.json()["code"] == "channel_mismatch"

    state = (await svc.client.get(f"/v1/wallet/top-ups/{top_up['top_up_id']}", headers=svc.auth(user))).json()
    assert state["status"] == "pending"
    assert await svc.balance(user) == 0
    assert (await sql(svc, "SELECT count(*) FROM ledger_transactions"))[0][0] == 0

    ok = await svc.client.post("/v1/payments/alipay/notify", content=body, headers=headers)
    assert ok.status_code == 200 and ok.json()["code"] == "SUCCESS"
    assert await svc.balance(user) == 3000


async def test_duplicate_notifications_credit_once(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 4200)
    body, headers = svc.provider("alipay").signed_notification(notification(top_up))
    responses = await asyncio.gather(
        *[svc.client.post("/v1/payments/alipay/notify", content=body, headers=headers) for _ in range(10)]
    )
    assert [r.status_code for r in responses] == [200] * 10
    again = await svc.client.post("/v1/payments/alipay/notify", content=body, headers=headers)
    assert again.status_code == 200
    # A contradicting (FAILED) notification for a succeeded top-up changes nothing either.
    f_body, f_headers = svc.provider("alipay").signed_notification(notification(top_up, status="FAILED"))
    assert (await svc.client.post("/v1/payments/alipay/notify", content=f_body, headers=f_headers)).status_code == 200

    assert await svc.balance(user) == 4200
    assert (await sql(svc, "SELECT count(*) FROM postings"))[0][0] == 2
    assert (await sql(svc, "SELECT count(*) FROM outbox WHERE event_type = 'asset.wallet.topped_up'"))[0][0] == 1
    state = (await svc.client.get(f"/v1/wallet/top-ups/{top_up['top_up_id']}", headers=svc.auth(user))).json()
    assert state["status"] == "succeeded"
    await assert_books_balance(svc)


async def test_notification_for_unknown_top_up(quiet_svc) -> None:
    svc = quiet_svc
    body, headers = svc.provider("alipay").signed_notification(
        notification({"top_up_id": str(uuid.uuid4()), "amount_fen": 100})
    )
    response = await svc.client.post("/v1/payments/alipay/notify", content=body, headers=headers)
    assert response.status_code == 404 and response.json()["code"] == "top_up_not_found"
