"""Integration: withdrawing the balance back through the top-ups it came from (real PG, sandbox)."""

import asyncio
import uuid

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from contracts.events import ChargeRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


async def withdraw(svc, user: uuid.UUID, amount: int, key: str):
    return await svc.client.post(
        "/v1/wallet/withdrawals", json={"amount_fen": amount}, headers={**svc.auth(user), "Idempotency-Key": key}
    )


async def test_withdrawal_goes_back_through_the_newest_top_ups(svc) -> None:
    user = uuid.uuid4()
    first = await svc.top_up(user, 1000, "alipay")
    await svc.wait_top_up(user, first["top_up_id"])
    second = await svc.top_up(user, 500, "wechat")
    await svc.wait_top_up(user, second["top_up_id"])
    assert await svc.balance(user) == 1500

    response = await withdraw(svc, user, 700, "w-1")
    assert response.status_code == 201, response.text
    parts = [(p["top_up_id"], p["channel"], p["amount_fen"]) for p in response.json()["parts"]]
    assert parts == [(second["top_up_id"], "wechat", 500), (first["top_up_id"], "alipay", 200)]
    assert await svc.balance(user) == 800
    replay = await withdraw(svc, user, 700, "w-1")
    assert replay.status_code == 200
    assert replay.json()["withdrawal_id"] == response.json()["withdrawal_id"]
    reused = await withdraw(svc, user, 1, "w-1")
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    too_much = await withdraw(svc, user, 801, "w-2")
    assert too_much.status_code == 409
    assert too_much.json()["code"] == "not_withdrawable"
    assert (await withdraw(svc, user, 0, "w-3")).status_code == 422
    assert await svc.balance(user) == 800

    for _ in range(100):
        statuses = await sql(svc, "SELECT status FROM withdrawal_parts")
        if statuses and all(s == ("succeeded",) for s in statuses):
            break
        await asyncio.sleep(0.05)
    assert statuses == [("succeeded",), ("succeeded",)]
    assert svc.provider("wechat")._orders[second["top_up_id"]].refunds
    assert sum(svc.provider("alipay")._orders[first["top_up_id"]].refunds.values()) == 200
    unbalanced = await sql(
        svc, "SELECT transaction_id FROM postings GROUP BY transaction_id HAVING sum(amount_fen) <> 0"
    )
    assert unbalanced == []


async def test_concurrent_withdrawals_never_take_more_than_the_balance(svc) -> None:
    user = await svc.funded_user(1000)
    responses = await asyncio.gather(*(withdraw(svc, user, 300, f"k{i}") for i in range(5)))
    assert sorted(r.status_code for r in responses) == [201, 201, 201, 409, 409]
    assert await svc.balance(user) == 100


async def test_a_user_who_owes_cannot_withdraw(svc) -> None:
    user = await svc.funded_user(100)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        request = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=150)
        assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "failed"
    response = await withdraw(svc, user, 100, "k")
    assert response.status_code == 409
    assert response.json()["code"] == "owing"


async def test_a_deregistered_users_balance_goes_back_to_its_channels_once(svc) -> None:
    from datetime import UTC, datetime

    from asset_credit_svc.consumers import on_user_deregistered
    from contracts import new_event
    from contracts.events import UserDeregistered

    user = uuid.uuid4()
    first = await svc.top_up(user, 1000, "alipay")
    await svc.wait_top_up(user, first["top_up_id"])
    second = await svc.top_up(user, 500, "wechat")
    await svc.wait_top_up(user, second["top_up_id"])
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        request = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=150)
        assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "settled"
    handle = on_user_deregistered(svc.runtime)
    event = new_event(UserDeregistered(user_id=user, at=datetime.now(UTC)), key=str(user), producer="user-svc-test")
    for _ in range(2):  # redelivered: nothing more is withdrawn
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            await handle(session, event)
    assert await svc.balance(user) == 0
    rows = await sql(
        svc,
        "SELECT p.channel, p.amount_fen FROM withdrawal_parts p JOIN withdrawals w ON w.id = p.withdrawal_id "
        "WHERE w.user_id = :u ORDER BY p.channel",
        u=user,
    )
    assert rows == [("alipay", 850), ("wechat", 500)]
