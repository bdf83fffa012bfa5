"""Integration: the deposit is paid through a provider, refunded back to it (never while renting or
owing, also when the user deregisters), idempotent on its key, with a history (real PG)."""

import asyncio
import uuid

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from asset_credit_svc.deposit import service as deposits
from contracts import event_adapter
from contracts.events import ChargeRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration

DEPOSIT = 9900


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


async def held(svc, user: uuid.UUID) -> int:
    response = await svc.client.get("/v1/deposit", headers=svc.auth(user))
    assert response.status_code == 200, response.text
    assert response.json()["required_fen"] == DEPOSIT
    return int(response.json()["held_fen"])


async def wait_held(svc, user: uuid.UUID, expected: int) -> None:
    for _ in range(200):
        if await held(svc, user) == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"deposit held {await held(svc, user)}, expected {expected}")


async def pay(svc, user: uuid.UUID, key: str, channel: str = "alipay"):
    return await svc.client.post(
        "/v1/deposit/payments", json={"channel": channel}, headers={**svc.auth(user), "Idempotency-Key": key}
    )


async def refund(svc, user: uuid.UUID, key: str):
    return await svc.client.post("/v1/deposit/refunds", headers={**svc.auth(user), "Idempotency-Key": key})


async def paid_deposit(svc) -> uuid.UUID:
    user = uuid.uuid4()
    response = await pay(svc, user, uuid.uuid4().hex)
    assert response.status_code == 201, response.text
    await wait_held(svc, user, DEPOSIT)
    return user


async def settle(svc, request: ChargeRequested) -> str:
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await charges.settle(session, svc.runtime, request, uuid.uuid4())


async def test_pay_is_idempotent_and_one_deposit_at_a_time(svc) -> None:
    user = uuid.uuid4()
    assert await held(svc, user) == 0
    first = await pay(svc, user, "dep-1")
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "pending"
    again = await pay(svc, user, "dep-1")
    assert again.status_code == 200
    assert again.json()["operation_id"] == first.json()["operation_id"]
    other_channel = await pay(svc, user, "dep-1", channel="wechat")
    assert other_channel.status_code == 409
    assert other_channel.json()["code"] == "idempotency_key_reused"
    await wait_held(svc, user, DEPOSIT)
    second = await pay(svc, user, "dep-2")
    assert second.status_code == 409
    assert second.json()["code"] == "deposit_held"
    assert (await pay(svc, user, "")).status_code == 400
    history = (await svc.client.get("/v1/deposit/history", headers=svc.auth(user))).json()["items"]
    assert [(h["kind"], h["status"], h["amount_fen"]) for h in history] == [("pay", "succeeded", DEPOSIT)]


async def test_refund_is_refused_while_renting_or_owing_then_goes_back_to_the_provider(svc) -> None:
    user = await paid_deposit(svc)
    rental_id = uuid.uuid4()
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        await deposits.track_rental(session, rental_id, user, open_=True)
    renting = await refund(svc, user, "r-1")
    assert renting.status_code == 409
    assert renting.json()["code"] == "renting"
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        await deposits.track_rental(session, rental_id, user, open_=False)
    # The rental's charge failed (empty wallet, no payment method): the user owes it.
    assert (
        await settle(svc, ChargeRequested(charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user, amount_fen=150))
        == "failed"
    )
    owing = await refund(svc, user, "r-1")
    assert owing.status_code == 409
    assert owing.json()["code"] == "owing"
    # Paid manually (a new charge for the same rental) after a top-up: no debt left.
    top_up = await svc.top_up(user, 150)
    await svc.wait_top_up(user, top_up["top_up_id"])
    assert (
        await settle(svc, ChargeRequested(charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user, amount_fen=150))
        == "settled"
    )

    done = await refund(svc, user, "r-1")
    assert done.status_code == 201, done.text
    assert done.json()["amount_fen"] == DEPOSIT
    assert await held(svc, user) == 0
    replay = await refund(svc, user, "r-1")
    assert replay.status_code == 200
    assert replay.json()["operation_id"] == done.json()["operation_id"]
    nothing = await refund(svc, user, "r-2")
    assert nothing.status_code == 409
    assert nothing.json()["code"] == "no_deposit"
    reused = await pay(svc, user, "r-1")
    assert reused.status_code == 409

    # The provider refunded the paying order, once.
    [pay_op] = await sql(svc, "SELECT id FROM deposit_operations WHERE user_id = :u AND kind = 'pay'", u=user)
    order = svc.provider("alipay")._orders[deposits.order_no(pay_op[0])]
    for _ in range(100):
        statuses = await sql(
            svc, "SELECT status FROM deposit_operations WHERE user_id = :u AND kind = 'refund'", u=user
        )
        if statuses == [("succeeded",)]:
            break
        await asyncio.sleep(0.05)
    assert statuses == [("succeeded",)]
    assert sum(order.refunds.values()) == DEPOSIT
    history = (await svc.client.get("/v1/deposit/history", headers=svc.auth(user))).json()["items"]
    assert [(h["kind"], h["status"]) for h in history] == [("refund", "succeeded"), ("pay", "succeeded")]
    unbalanced = await sql(
        svc, "SELECT transaction_id FROM postings GROUP BY transaction_id HAVING sum(amount_fen) <> 0"
    )
    assert unbalanced == []
    # What the regulator's deposit figures are built from (analytics-svc), through the outbox.
    rows = await sql(
        svc, "SELECT payload FROM outbox WHERE key = :k AND topic = 'asset.deposits.v1' ORDER BY id", k=str(user)
    )
    events = [event_adapter.validate_json(payload).data for (payload,) in rows]
    assert [(e.type, e.amount_fen) for e in events] == [
        ("asset.deposit.paid", DEPOSIT),
        ("asset.deposit.refund_requested", DEPOSIT),
        ("asset.deposit.refunded", DEPOSIT),
    ]
    assert events[2].refund_id == events[1].refund_id == uuid.UUID(done.json()["operation_id"])
    assert events[2].paid_at >= events[2].requested_at


async def test_concurrent_refunds_refund_once(svc) -> None:
    user = await paid_deposit(svc)
    responses = await asyncio.gather(*(refund(svc, user, f"k-{i}") for i in range(5)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 1, [r.text for r in responses]
    assert all(r.json()["code"] == "no_deposit" for r in responses if r.status_code == 409)
    assert await held(svc, user) == 0
    refunded = await sql(svc, "SELECT count(*) FROM deposit_operations WHERE user_id = :u AND kind = 'refund'", u=user)
    assert refunded == [(1,)]


async def test_deregistration_refunds_the_deposit_unless_renting(svc) -> None:
    user = await paid_deposit(svc)
    renter = await paid_deposit(svc)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        await deposits.track_rental(session, uuid.uuid4(), renter, open_=True)
    for _ in range(2):  # a redelivered event changes nothing more
        for who in (user, renter):
            async with unit_of_work(svc.runtime.sessionmaker) as session:
                await deposits.on_deregistered(session, svc.runtime, who)
    assert await held(svc, user) == 0
    assert await held(svc, renter) == DEPOSIT
    sources = await sql(
        svc,
        "SELECT user_id, source FROM deposit_operations WHERE kind = 'refund' AND user_id IN (:a, :b)",
        a=user,
        b=renter,
    )
    assert sources == [(user, "deregistered")]
