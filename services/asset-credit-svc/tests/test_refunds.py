"""Integration: refunds (support corrections) and at most one collected charge per rental (real PG),
through the service code the consumer runs, plus one round trip over Kafka."""

import asyncio
import uuid

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from asset_credit_svc.refunds import service as refunds
from contracts import Topic, new_event
from contracts.events import ChargeRequested, RefundRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


async def settle(svc, request: ChargeRequested) -> str:
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await charges.settle(session, svc.runtime, request, uuid.uuid4())


async def refund(svc, request: RefundRequested) -> str:
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await refunds.refund(session, svc.runtime, request, uuid.uuid4())


def refund_of(charge: ChargeRequested, amount_fen: int) -> RefundRequested:
    return RefundRequested(
        refund_id=uuid.uuid4(),
        rental_id=charge.rental_id,
        user_id=charge.user_id,
        amount_fen=amount_fen,
        reason="correction by agent",
    )


async def test_a_rental_is_collected_at_most_once(svc) -> None:
    user = await svc.funded_user(1000)
    rental_id = uuid.uuid4()
    first = ChargeRequested(charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user, amount_fen=300)
    second = ChargeRequested(charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user, amount_fen=300)
    outcomes = await asyncio.gather(settle(svc, first), settle(svc, second), return_exceptions=True)
    # Racing, one may lose on the unique index (its unit of work rolls back and the consumer would
    # retry it); the retry is refused.
    settled = [o for o in outcomes if o == "settled"]
    assert len(settled) == 1, outcomes
    for request, outcome in zip((first, second), outcomes, strict=True):
        if outcome != "settled":
            again = await settle(svc, request)
            assert again in ("failed", "duplicate")
    assert await svc.balance(user) == 700
    statuses = await sql(svc, "SELECT status FROM charges WHERE rental_id = :r ORDER BY status", r=rental_id)
    assert statuses == [("failed",), ("settled",)]
    failed = await sql(
        svc, "SELECT failure_reason FROM charges WHERE rental_id = :r AND status = 'failed'", r=rental_id
    )
    assert failed == [("rental_already_charged",)]


async def test_refunds_give_back_at_most_what_was_collected_once_each(svc) -> None:
    user = await svc.funded_user(1000)
    charge = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=300)
    assert await settle(svc, charge) == "settled"
    first = refund_of(charge, 200)
    assert await refund(svc, first) == "settled"
    assert await refund(svc, first) == "duplicate"
    assert await svc.balance(user) == 900
    assert await refund(svc, refund_of(charge, 101)) == "failed"  # only 100 left
    assert await refund(svc, refund_of(charge, 100)) == "settled"
    assert await svc.balance(user) == 1000
    # Nothing collected for another rental: nothing to refund.
    stray = refund_of(ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=1), 1)
    assert await refund(svc, stray) == "failed"
    assert await svc.balance(user) == 1000
    entries = (await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))).json()["items"]
    assert [(e["kind"], e["amount_fen"]) for e in entries] == [
        ("refund", 100),
        ("refund", 200),
        ("charge", -300),
        ("top_up", 1000),
    ]
    # The books balance: every transaction sums to zero.
    unbalanced = await sql(
        svc, "SELECT transaction_id FROM postings GROUP BY transaction_id HAVING sum(amount_fen) <> 0"
    )
    assert unbalanced == []


async def test_concurrent_refunds_of_one_rental_never_exceed_the_charge(svc) -> None:
    user = await svc.funded_user(1000)
    charge = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=500)
    assert await settle(svc, charge) == "settled"
    outcomes = await asyncio.gather(*(refund(svc, refund_of(charge, 100)) for _ in range(8)))
    assert sorted(outcomes) == ["failed"] * 3 + ["settled"] * 5
    assert await svc.balance(user) == 1000


async def test_refund_over_kafka_publishes_refund_settled(service_factory, producer, payments_topic) -> None:
    async with service_factory() as svc:
        await svc.wait_consumers_ready()
        user = await svc.funded_user(1000)
        charge = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=300)
        assert await settle(svc, charge) == "settled"
        request = refund_of(charge, 150)
        envelope = new_event(request, key=str(user), producer="billing-svc-test")
        await producer.send_and_wait(Topic.CHARGES.value, envelope.to_bytes(), key=envelope.key.encode())
        await producer.send_and_wait(Topic.CHARGES.value, envelope.to_bytes(), key=envelope.key.encode())
        settled = await payments_topic.wait_for(
            lambda e: e.type == "asset.refund.settled" and e.data.refund_id == request.refund_id
        )
        assert settled.data.amount_fen == 150
        assert settled.data.balance_fen == 850
        assert settled.key == str(user)
        assert await svc.balance(user) == 850
