"""Integration: concurrent charges and top-ups on one wallet, through the service code the consumer
and the notify endpoint run (real PG): the balance stays exact and never negative."""

import asyncio
import uuid

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from asset_credit_svc.payments import service as payments
from asset_credit_svc.payments.providers import PaymentNotification
from contracts.events import ChargeRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


def charge_request(user_id: uuid.UUID, amount_fen: int, charge_id: uuid.UUID | None = None) -> ChargeRequested:
    return ChargeRequested(
        charge_id=charge_id or uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user_id, amount_fen=amount_fen
    )


async def settle_directly(svc, request: ChargeRequested) -> str:
    """What the consumer does for one event, in its own unit of work."""
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await charges.settle(session, svc.runtime, request, uuid.uuid4())


async def notify_directly(svc, top_up_id: str, amount_fen: int) -> str:
    note = PaymentNotification(
        out_trade_no=top_up_id, trade_no=f"T-{top_up_id}", amount_fen=amount_fen, status="SUCCESS", nonce="n"
    )
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await payments.apply_notification(session, svc.runtime, "alipay", note)


@pytest.fixture
async def quiet_svc(service_factory):
    async with service_factory(sandbox_pay_delay_min_s=60.0, sandbox_pay_delay_max_s=60.0) as service:
        yield service


async def test_concurrent_charges_never_overdraw(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()
    seed = await svc.top_up(user, 5000)
    assert await notify_directly(svc, seed["top_up_id"], 5000) == "succeeded"

    outcomes = await asyncio.gather(*[settle_directly(svc, charge_request(user, 300)) for _ in range(25)])
    assert outcomes.count("settled") == 16 and outcomes.count("failed") == 9  # 16 * 300 = 4800 <= 5000
    assert await svc.balance(user) == 200
    revenue = await sql(svc, "SELECT balance_fen FROM accounts WHERE kind = 'platform_revenue'")
    assert revenue == [(4800,)]


async def test_concurrent_duplicate_charges_settle_once(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()
    seed = await svc.top_up(user, 1000)
    await notify_directly(svc, seed["top_up_id"], 1000)
    request = charge_request(user, 400)
    outcomes = await asyncio.gather(*[settle_directly(svc, request) for _ in range(10)])
    assert sorted(outcomes) == ["duplicate"] * 9 + ["settled"]
    assert await svc.balance(user) == 600


async def test_concurrent_top_ups_and_charges_keep_the_balance_exact(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()
    top_ups = [await svc.top_up(user, 250) for _ in range(12)]
    requests = [charge_request(user, 100) for _ in range(30)]
    work = [notify_directly(svc, t["top_up_id"], 250) for t in top_ups] + [settle_directly(svc, r) for r in requests]
    order = list(range(len(work)))
    order = order[::2] + order[1::2]  # interleave top-ups with charges
    outcomes = await asyncio.gather(*[work[i] for i in order])
    settled = outcomes.count("settled")
    assert outcomes.count("succeeded") == 12
    assert settled + outcomes.count("failed") == 30

    assert await svc.balance(user) == 12 * 250 - settled * 100
    rows = await sql(svc, "SELECT status, count(*) FROM charges GROUP BY status")
    assert dict(rows).get("settled", 0) == settled
    # Every transaction balances; every stored balance is the sum of its postings; nothing negative.
    assert await sql(svc, "SELECT transaction_id FROM postings GROUP BY 1 HAVING sum(amount_fen) <> 0") == []
    assert (
        await sql(
            svc,
            "SELECT a.id FROM accounts a LEFT JOIN postings p ON p.account_id = a.id "
            "GROUP BY a.id HAVING a.balance_fen <> coalesce(sum(p.amount_fen), 0)",
        )
        == []
    )
    assert (
        await sql(
            svc,
            "SELECT min(balance_after_fen) FROM postings p JOIN accounts a ON a.id = p.account_id "
            "WHERE a.kind = 'user_balance'",
        )
    )[0][0] >= 0
    assert (await sql(svc, "SELECT sum(balance_fen) FROM accounts"))[0][0] == 0
