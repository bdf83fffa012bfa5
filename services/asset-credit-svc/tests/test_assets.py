"""Integration: virtual assets (coupons, red packets, cards) through the HTTP API and at settlement,
against the real PostgreSQL (and Kafka for the waiver): the best coupon, minimum spend, expiry,
no double use under concurrency, red packets spent in part and returned when expired, card
coverage, the order of application, exact balances and balanced books."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from asset_credit_svc.assets import service as assets
from asset_credit_svc.charges import service as charges
from asset_credit_svc.deposit import service as deposits
from asset_credit_svc.refunds import service as refunds
from contracts import Topic, event_adapter, new_event
from contracts.events import ChargeRequested, ChargeSettled, DebtWaived, RefundRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params) -> list[Any]:
    async with svc.runtime.engine.connect() as conn:
        return list((await conn.execute(text(query), params)).all())


def admin(svc, role: str = "finance") -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.signer.issue('staff-' + role, kind='admin', roles=[role])}"}


async def template(svc, **body: Any) -> str:
    body = {"name": "promo", "valid_days": 30, **body}
    response = await svc.client.post("/v1/admin/asset-templates", json=body, headers=admin(svc))
    assert response.status_code == 201, response.text
    return str(response.json()["template_id"])


async def issue(svc, template_id: str, *users: uuid.UUID, key: str | None = None) -> list[dict[str, Any]]:
    response = await svc.client.post(
        f"/v1/admin/asset-templates/{template_id}/issues",
        json={"user_ids": [str(u) for u in users]},
        headers={**admin(svc), "Idempotency-Key": key or uuid.uuid4().hex},
    )
    assert response.status_code in (200, 201), response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def mine(svc, user: uuid.UUID, **params: str) -> dict[str, Any]:
    response = await svc.client.get("/v1/assets", params=params, headers=svc.auth(user))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def request_for(user: uuid.UUID, fee_fen: int, minutes: int | None = None) -> ChargeRequested:
    return ChargeRequested(
        charge_id=uuid.uuid4(),
        rental_id=uuid.uuid4(),
        user_id=user,
        amount_fen=fee_fen,
        duration_seconds=None if minutes is None else minutes * 60,
    )


async def settle(svc, request: ChargeRequested) -> str:
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await charges.settle(session, svc.runtime, request, uuid.uuid4())


async def settled_event(svc, charge_id: uuid.UUID) -> ChargeSettled:
    rows = await sql(svc, "SELECT payload FROM outbox ORDER BY id")
    for (payload,) in rows:
        envelope = event_adapter.validate_json(bytes(payload))
        if isinstance(envelope.data, ChargeSettled) and envelope.data.charge_id == charge_id:
            return envelope.data
    raise AssertionError(f"no asset.charge.settled for {charge_id}")


async def account(svc, kind: str, user: uuid.UUID | None = None) -> int:
    rows = await sql(
        svc,
        "SELECT balance_fen FROM accounts WHERE kind = :k AND user_id IS NOT DISTINCT FROM :u",
        k=kind,
        u=user,
    )
    return int(rows[0][0]) if rows else 0


async def assert_books_balance(svc) -> None:
    assert await sql(svc, "SELECT transaction_id FROM postings GROUP BY 1 HAVING sum(amount_fen) <> 0") == []
    mismatched = await sql(
        svc,
        "SELECT a.id FROM accounts a LEFT JOIN postings p ON p.account_id = a.id "
        "GROUP BY a.id HAVING a.balance_fen <> coalesce(sum(p.amount_fen), 0)",
    )
    assert mismatched == []
    assert (await sql(svc, "SELECT coalesce(sum(balance_fen), 0) FROM accounts"))[0][0] == 0
    negative = await sql(
        svc, "SELECT kind FROM accounts WHERE kind IN ('user_balance', 'user_red_packet') AND balance_fen < 0"
    )
    assert negative == []
    # Each user's red packet account holds exactly what their red packets hold.
    drift = await sql(
        svc,
        "SELECT a.user_id FROM accounts a LEFT JOIN user_assets u ON u.user_id = a.user_id "
        "AND u.kind = 'red_packet' AND u.status = 'available' WHERE a.kind = 'user_red_packet' "
        "GROUP BY a.user_id, a.balance_fen HAVING a.balance_fen <> coalesce(sum(u.remaining_fen), 0)",
    )
    assert drift == []


async def expire(svc, asset_id: str) -> None:
    """The asset's validity ended a minute ago (as if time had passed)."""
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        await session.execute(
            text("UPDATE user_assets SET expires_at = now() - interval '1 minute' WHERE id = :id"), {"id": asset_id}
        )


# ---- administration -------------------------------------------------------------------------


async def test_templates_are_validated_and_only_staff_manage_them(svc) -> None:
    path = "/v1/admin/asset-templates"
    user = uuid.uuid4()
    coupon = {"kind": "coupon", "name": "3 off", "amount_off_fen": 300, "valid_days": 7}
    assert (await svc.client.post(path, json=coupon, headers=svc.auth(user))).status_code == 403
    assert (await svc.client.post(path, json=coupon, headers=admin(svc, "support"))).status_code == 403
    assert (await svc.client.post(path, json=coupon, headers=admin(svc, "operator"))).status_code == 201

    async def refused(body: dict[str, Any]) -> tuple[int, str]:
        response = await svc.client.post(path, json={"name": "x", "valid_days": 7, **body}, headers=admin(svc))
        return response.status_code, response.json()["code"]

    assert await refused({"kind": "coupon", "percent_off": 120}) == (422, "percent_out_of_range")
    assert await refused({"kind": "coupon", "percent_off": 0}) == (422, "percent_out_of_range")
    assert await refused({"kind": "coupon", "percent_off": 10, "amount_off_fen": 100}) == (
        422,
        "invalid_asset_template",
    )
    assert await refused({"kind": "coupon"}) == (422, "invalid_asset_template")
    assert await refused({"kind": "coupon", "amount_off_fen": -5}) == (422, "invalid_asset_template")
    assert await refused({"kind": "red_packet"}) == (422, "invalid_asset_template")
    assert await refused({"kind": "card", "card_minutes": 60, "min_spend_fen": 100}) == (422, "invalid_asset_template")
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert await refused({"kind": "red_packet", "amount_fen": 100, "valid_until": past}) == (409, "template_expired")
    no_validity = await svc.client.post(
        path, json={"kind": "red_packet", "name": "x", "amount_fen": 100}, headers=admin(svc)
    )
    assert (no_validity.status_code, no_validity.json()["code"]) == (422, "invalid_asset_template")
    assert (await svc.client.post(path, json={**coupon, "kind": "gift"}, headers=admin(svc))).status_code == 422
    listed = await svc.client.get(path, headers=admin(svc, "operator"))
    assert [t["name"] for t in listed.json()["items"]] == ["3 off"]


async def test_issuing_is_idempotent_and_users_see_only_their_own(svc) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    coupon = await template(svc, kind="coupon", amount_off_fen=200, min_spend_fen=300)
    first = await issue(svc, coupon, alice, bob, alice, key="campaign-1")
    assert len(first) == 2
    again = await svc.client.post(
        f"/v1/admin/asset-templates/{coupon}/issues",
        json={"user_ids": [str(alice)]},
        headers={**admin(svc), "Idempotency-Key": "campaign-1"},
    )
    assert again.status_code == 200
    assert again.json()["issued"] == 0
    assert again.json()["items"][0]["asset_id"] == first[0]["asset_id"]
    assert (await issue(svc, coupon, alice, key="campaign-2"))[0]["asset_id"] != first[0]["asset_id"]

    listed = await mine(svc, alice)
    assert [(a["kind"], a["status"], a["amount_off_fen"], a["min_spend_fen"]) for a in listed["items"]] == [
        ("coupon", "available", 200, 300)
    ] * 2
    assert [h["action"] for h in listed["history"]] == ["issued", "issued"]
    assert len((await mine(svc, bob))["items"]) == 1
    foreign = await svc.client.get(f"/v1/assets/{first[0]['asset_id']}", headers=svc.auth(bob))
    assert (foreign.status_code, foreign.json()["code"]) == (404, "asset_not_found")

    # A deactivated template issues nothing more; unknown templates are 404.
    await svc.client.post(f"/v1/admin/asset-templates/{coupon}/deactivate", headers=admin(svc))
    inactive = await svc.client.post(
        f"/v1/admin/asset-templates/{coupon}/issues",
        json={"user_ids": [str(alice)]},
        headers={**admin(svc), "Idempotency-Key": "campaign-3"},
    )
    assert (inactive.status_code, inactive.json()["code"]) == (409, "template_inactive")
    unknown = await svc.client.post(
        f"/v1/admin/asset-templates/{uuid.uuid4()}/issues",
        json={"user_ids": [str(alice)]},
        headers={**admin(svc), "Idempotency-Key": "k"},
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "asset_template_not_found")
    no_key = await svc.client.post(
        f"/v1/admin/asset-templates/{coupon}/issues", json={"user_ids": [str(alice)]}, headers=admin(svc)
    )
    assert no_key.status_code == 400


# ---- coupons at settlement ------------------------------------------------------------------


async def test_the_best_applicable_coupon_is_used_once_and_shown_in_the_history(svc) -> None:
    user = await svc.funded_user(1000)
    small = await template(svc, kind="coupon", amount_off_fen=100)
    capped = await template(svc, kind="coupon", percent_off=50, max_discount_fen=150)
    big_min = await template(svc, kind="coupon", amount_off_fen=250, min_spend_fen=500)
    for t in (small, capped, big_min):
        await issue(svc, t, user)

    request = request_for(user, 400)
    assert await settle(svc, request) == "settled"
    event = await settled_event(svc, request.charge_id)
    assert (event.amount_fen, event.coupon_fen, event.paid_fen, event.balance_fen) == (400, 150, 250, 750)
    assert await svc.balance(user) == 750
    assets_now = {a["template_id"]: a for a in (await mine(svc, user))["items"]}
    assert assets_now[capped]["status"] == "used"
    assert assets_now[capped]["used_rental_id"] == str(request.rental_id)
    assert assets_now[small]["status"] == assets_now[big_min]["status"] == "available"
    applied = [h for h in (await mine(svc, user))["history"] if h["action"] == "applied"]
    assert [(h["amount_fen"], h["rental_id"]) for h in applied] == [(150, str(request.rental_id))]
    used = await mine(svc, user, status="used")
    assert [a["template_id"] for a in used["items"]] == [capped]

    # Below the minimum spend the 250-off coupon does not apply; the 100-off one does.
    second = request_for(user, 450)
    assert await settle(svc, second) == "settled"
    assert (await settled_event(svc, second.charge_id)).coupon_fen == 100
    assert await svc.balance(user) == 750 - 350
    # Ledger: revenue has the gross fees, promotions pays the discounts.
    assert await account(svc, "platform_revenue") == 850
    assert await account(svc, "platform_promotions") == -250
    await assert_books_balance(svc)


async def test_an_expired_coupon_never_applies_and_the_sweep_marks_it(svc) -> None:
    user = await svc.funded_user(500)
    coupon = await template(svc, kind="coupon", amount_off_fen=100)
    [asset] = await issue(svc, coupon, user)
    await expire(svc, asset["asset_id"])
    assert (await mine(svc, user))["items"][0]["status"] == "expired"  # before the sweep, too
    request = request_for(user, 300)
    assert await settle(svc, request) == "settled"
    assert (await settled_event(svc, request.charge_id)).coupon_fen == 0
    assert await svc.balance(user) == 200

    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await assets.expire_due(session, datetime.now(UTC)) == 1
    detail = (await svc.client.get(f"/v1/assets/{asset['asset_id']}", headers=svc.auth(user))).json()
    assert detail["asset"]["status"] == "expired"
    assert [h["action"] for h in detail["history"]] == ["expired", "issued"]
    # Issuing from a template whose validity ended is refused.
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        await session.execute(
            text("UPDATE asset_templates SET valid_until = now() - interval '1 second' WHERE id = :id"), {"id": coupon}
        )
    ended = await svc.client.post(
        f"/v1/admin/asset-templates/{coupon}/issues",
        json={"user_ids": [str(user)]},
        headers={**admin(svc), "Idempotency-Key": "late"},
    )
    assert (ended.status_code, ended.json()["code"]) == (409, "template_expired")


async def test_one_coupon_is_never_used_twice_by_concurrent_settlements(svc) -> None:
    user = await svc.funded_user(5000)
    coupon = await template(svc, kind="coupon", amount_off_fen=100)
    await issue(svc, coupon, user)
    requests = [request_for(user, 300) for _ in range(8)]
    outcomes = await asyncio.gather(*[settle(svc, r) for r in requests])
    assert outcomes == ["settled"] * 8
    discounts = [(await settled_event(svc, r.charge_id)).coupon_fen for r in requests]
    assert sorted(discounts) == [0] * 7 + [100]
    assert await svc.balance(user) == 5000 - 8 * 300 + 100
    applied = await sql(svc, "SELECT count(*) FROM asset_history WHERE action = 'applied'")
    assert applied == [(1,)]
    await assert_books_balance(svc)


# ---- red packets ----------------------------------------------------------------------------


async def test_a_red_packet_is_spent_in_part_and_its_remainder_returns_when_it_expires(svc) -> None:
    user = await svc.funded_user(100)
    packet = await template(svc, kind="red_packet", amount_fen=500)
    await issue(svc, packet, user)
    assert (await svc.client.get("/v1/wallet", headers=svc.auth(user))).json()["red_packet_fen"] == 500
    assert await account(svc, "platform_promotions") == -500

    request = request_for(user, 300)
    assert await settle(svc, request) == "settled"
    event = await settled_event(svc, request.charge_id)
    assert (event.red_packet_fen, event.paid_fen, event.balance_fen) == (300, 0, 100)
    assert await svc.balance(user) == 100  # the balance is untouched
    assert (await mine(svc, user))["red_packet_balance_fen"] == 200
    assert (await mine(svc, user))["items"][0]["remaining_fen"] == 200

    # A bigger fee: the red packet's 200, then the balance.
    second = request_for(user, 250)
    assert await settle(svc, second) == "settled"
    event = await settled_event(svc, second.charge_id)
    assert (event.red_packet_fen, event.paid_fen) == (200, 50)
    assert await svc.balance(user) == 50
    assert (await mine(svc, user))["items"][0]["status"] == "used"

    # Another packet, unspent, expires: its remainder goes back to promotions.
    [other] = await issue(svc, packet, user)
    third = request_for(user, 120)
    assert await settle(svc, third) == "settled"
    await expire(svc, other["asset_id"])
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await assets.expire_due(session, datetime.now(UTC)) == 1
    assert await account(svc, "user_red_packet", user) == 0
    assert await account(svc, "platform_promotions") == -500 - 500 + 380
    assert await account(svc, "platform_revenue") == 300 + 250 + 120
    history = (await svc.client.get(f"/v1/assets/{other['asset_id']}", headers=svc.auth(user))).json()["history"]
    assert [(h["action"], h["amount_fen"]) for h in history] == [("expired", 380), ("applied", 120), ("issued", 500)]
    # Red packets are not money to withdraw: the withdrawal sees only the balance.
    withdraw = await svc.client.post(
        "/v1/wallet/withdrawals", json={"amount_fen": 100}, headers={**svc.auth(user), "Idempotency-Key": "w"}
    )
    assert withdraw.status_code >= 400
    await assert_books_balance(svc)


async def test_only_unused_assets_can_be_revoked(svc) -> None:
    user = await svc.funded_user(1000)
    packet = await template(svc, kind="red_packet", amount_fen=300)
    coupon = await template(svc, kind="coupon", amount_off_fen=100)
    [unused_packet] = await issue(svc, packet, user)
    [used_coupon] = await issue(svc, coupon, user)
    assert await settle(svc, request_for(user, 500)) == "settled"  # uses the coupon and the packet
    [fresh_packet] = await issue(svc, packet, user)

    refused = await svc.client.post(f"/v1/admin/assets/{used_coupon['asset_id']}/revoke", headers=admin(svc))
    assert (refused.status_code, refused.json()["code"]) == (409, "asset_in_use")
    spent = await svc.client.post(f"/v1/admin/assets/{unused_packet['asset_id']}/revoke", headers=admin(svc))
    assert spent.status_code == 409
    revoked = await svc.client.post(f"/v1/admin/assets/{fresh_packet['asset_id']}/revoke", headers=admin(svc))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert await account(svc, "user_red_packet", user) == 0
    assert await account(svc, "platform_promotions") == -300 - 100  # the spent packet and the coupon
    listed = await svc.client.get("/v1/admin/assets", params={"user_id": str(user)}, headers=admin(svc))
    assert sorted(a["status"] for a in listed.json()["items"]) == ["revoked", "used", "used"]
    await assert_books_balance(svc)


# ---- cards ----------------------------------------------------------------------------------


async def test_a_card_covers_the_rental_minutes_it_has_left(svc) -> None:
    user = await svc.funded_user(1100)
    card = await template(svc, kind="card", card_minutes=60, price_fen=800)
    for_sale = await svc.client.get("/v1/assets/cards-for-sale", headers=svc.auth(user))
    assert [t["template_id"] for t in for_sale.json()["items"]] == [card]
    buy = {**svc.auth(user), "Idempotency-Key": "card-1"}
    bought = await svc.client.post("/v1/assets/cards", json={"template_id": card}, headers=buy)
    assert bought.status_code == 201, bought.text
    assert bought.json()["minutes_remaining"] == 60
    replay = await svc.client.post("/v1/assets/cards", json={"template_id": card}, headers=buy)
    assert replay.status_code == 200
    assert replay.json()["asset_id"] == bought.json()["asset_id"]
    assert await svc.balance(user) == 300
    short = await svc.client.post(
        "/v1/assets/cards", json={"template_id": card}, headers={**svc.auth(user), "Idempotency-Key": "card-2"}
    )
    assert (short.status_code, short.json()["code"]) == (402, "insufficient_balance")
    assert await svc.balance(user) == 300
    coupon_template = await template(svc, kind="coupon", amount_off_fen=100)
    not_a_card = await svc.client.post(
        "/v1/assets/cards",
        json={"template_id": coupon_template},
        headers={**svc.auth(user), "Idempotency-Key": "card-3"},
    )
    assert (not_a_card.status_code, not_a_card.json()["code"]) == (409, "card_not_for_sale")

    first = request_for(user, 300, minutes=50)  # the card has minutes for all of it
    assert await settle(svc, first) == "settled"
    assert ((await settled_event(svc, first.charge_id)).card_fen, await svc.balance(user)) == (300, 300)
    second = request_for(user, 300, minutes=40)  # 10 of 40 minutes left on the card: a quarter
    assert await settle(svc, second) == "settled"
    event = await settled_event(svc, second.charge_id)
    assert (event.card_fen, event.paid_fen, event.balance_fen) == (75, 225, 75)
    assert await svc.balance(user) == 75
    [asset] = (await mine(svc, user))["items"]
    assert (asset["status"], asset["minutes_remaining"]) == ("used", 0)
    history = [(h["action"], h["amount_fen"], h["minutes"]) for h in (await mine(svc, user))["history"]]
    assert history == [("applied", 75, 10), ("applied", 300, 50), ("issued", 800, 60)]
    assert await account(svc, "platform_revenue") == 800 + 300 + 300
    assert await account(svc, "platform_promotions") == -375
    await assert_books_balance(svc)


# ---- all together ---------------------------------------------------------------------------


async def test_card_then_coupon_then_red_packet_then_balance(svc) -> None:
    user = await svc.funded_user(1000)
    for body in (
        {"kind": "card", "card_minutes": 15},
        {"kind": "coupon", "percent_off": 20, "min_spend_fen": 400},
        {"kind": "red_packet", "amount_fen": 100},
    ):
        await issue(svc, await template(svc, **body), user)
    request = request_for(user, 600, minutes=60)
    assert await settle(svc, request) == "settled"
    event = await settled_event(svc, request.charge_id)
    # Card: 15 of 60 minutes = 150; coupon: 20 % of the 450 left = 90; red packet: 100; balance: 260.
    assert (event.card_fen, event.coupon_fen, event.red_packet_fen, event.paid_fen) == (150, 90, 100, 260)
    assert (event.amount_fen, event.balance_fen) == (600, 740)
    assert await svc.balance(user) == 740
    [(card_fen, coupon_fen, red_packet_fen)] = await sql(
        svc, "SELECT card_fen, coupon_fen, red_packet_fen FROM charges WHERE charge_id = :c", c=request.charge_id
    )
    assert (card_fen, coupon_fen, red_packet_fen) == (150, 90, 100)
    # One balanced transaction: balance -260, red packet -100, promotions -240, revenue +600.
    legs = await sql(
        svc,
        "SELECT a.kind, p.amount_fen FROM postings p JOIN accounts a ON a.id = p.account_id "
        "JOIN ledger_transactions t ON t.id = p.transaction_id WHERE t.reference = :r ORDER BY p.amount_fen",
        r=f"charge:{request.charge_id}",
    )
    assert legs == [
        ("user_balance", -260),
        ("platform_promotions", -240),
        ("user_red_packet", -100),
        ("platform_revenue", 600),
    ]
    assert sorted(a["status"] for a in (await mine(svc, user))["items"]) == ["used", "used", "used"]
    # A refund gives back at most what the user paid in money (260), not the discounts.
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        too_much = RefundRequested(
            refund_id=uuid.uuid4(), rental_id=request.rental_id, user_id=user, amount_fen=261, reason="test"
        )
        assert await refunds.refund(session, svc.runtime, too_much, uuid.uuid4()) == "failed"
        exact = RefundRequested(
            refund_id=uuid.uuid4(), rental_id=request.rental_id, user_id=user, amount_fen=260, reason="test"
        )
        assert await refunds.refund(session, svc.runtime, exact, uuid.uuid4()) == "settled"
    assert await svc.balance(user) == 1000
    await assert_books_balance(svc)


async def test_assets_apply_when_the_provider_pays_the_shortfall(service_factory) -> None:
    async with service_factory() as svc:
        user = uuid.uuid4()
        response = await svc.client.put("/v1/wallet/payment-method", json={"channel": "alipay"}, headers=svc.auth(user))
        assert response.status_code == 200
        await issue(svc, await template(svc, kind="coupon", amount_off_fen=100), user)
        request = request_for(user, 300)
        assert await settle(svc, request) == "awaiting_provider"
        [(provider_amount, coupon_used)] = await sql(
            svc,
            "SELECT provider_amount_fen, (SELECT count(*) FROM asset_history WHERE action = 'applied') "
            "FROM charges WHERE charge_id = :c",
            c=request.charge_id,
        )
        assert (provider_amount, coupon_used) == (200, 0)  # nothing spent until the provider paid

        async def settled() -> bool:
            rows = await sql(svc, "SELECT status FROM charges WHERE charge_id = :c", c=request.charge_id)
            return bool(rows and rows[0][0] == "settled")

        for _ in range(200):
            if await settled():
                break
            await asyncio.sleep(0.05)
        assert await settled()
        event = await settled_event(svc, request.charge_id)
        assert (event.coupon_fen, event.paid_fen, event.balance_fen) == (100, 200, 0)
        assert await svc.balance(user) == 0
        await assert_books_balance(svc)


# ---- a waived debt no longer blocks the deposit refund ---------------------------------------


async def test_a_debt_waived_by_billing_lets_the_deposit_be_refunded(svc, producer) -> None:
    await svc.wait_consumers_ready()
    user = uuid.uuid4()
    paid = await svc.client.post(
        "/v1/deposit/payments", json={"channel": "alipay"}, headers={**svc.auth(user), "Idempotency-Key": "dep"}
    )
    assert paid.status_code == 201, paid.text

    async def held() -> int:
        return int((await svc.client.get("/v1/deposit", headers=svc.auth(user))).json()["held_fen"])

    for _ in range(200):
        if await held() > 0:
            break
        await asyncio.sleep(0.05)
    assert await held() == 9900
    rental_id = uuid.uuid4()
    failed = ChargeRequested(charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user, amount_fen=150)

    async def score() -> int:
        return int((await svc.client.get("/v1/credit", headers=svc.auth(user))).json()["score"])

    before = await score()
    assert await settle(svc, failed) == "failed"  # empty wallet, no payment method: the user owes it
    assert await score() == before - 50  # the unpaid-debt penalty
    refund_path = "/v1/deposit/refunds"
    owing = await svc.client.post(refund_path, headers={**svc.auth(user), "Idempotency-Key": "r-1"})
    assert (owing.status_code, owing.json()["code"]) == (409, "owing")

    waived = DebtWaived(rental_id=rental_id, user_id=user, waived_fen=150, at=datetime.now(UTC))
    envelope = new_event(waived, key=str(user), producer="billing-svc-test")
    await producer.send_and_wait(Topic.CHARGES.value, envelope.to_bytes(), key=envelope.key.encode())

    async def not_owing() -> bool:
        async with svc.runtime.sessionmaker() as session:
            return await deposits.refusal(session, user) is None

    for _ in range(300):
        if await not_owing():
            break
        await asyncio.sleep(0.05)
    assert await not_owing()
    refunded = await svc.client.post(refund_path, headers={**svc.auth(user), "Idempotency-Key": "r-2"})
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["amount_fen"] == 9900
    assert await score() == before  # the waiver took the penalty back
    history = (await svc.client.get("/v1/credit/history", headers=svc.auth(user))).json()
    assert [c["reason"] for c in history["items"]][:2] == ["debt_waived", "unpaid_debt"]
