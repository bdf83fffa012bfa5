"""Integration: reconciliation against the provider's records reports mismatches; a crash between
the ledger write and the event loses nothing (the outbox commits with the ledger or not at all)."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from asset_credit_svc.payments import service as payments
from asset_credit_svc.payments.providers import OrderState, PaymentNotification
from contracts.events import ChargeRequested
from kit.db import unit_of_work
from kit.testing import eventually

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


@pytest.fixture
async def quiet_svc(service_factory):
    async with service_factory(sandbox_pay_delay_min_s=60.0, sandbox_pay_delay_max_s=60.0) as service:
        yield service


async def test_reconciliation_reports_what_differs_from_the_provider(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()
    since = datetime.now(UTC) - timedelta(seconds=1)
    credited = await svc.top_up(user, 1000)
    waiting = await svc.top_up(user, 2000)
    agreed = await svc.top_up(user, 3000)
    sandbox = svc.provider("alipay")

    async def orders_opened() -> None:
        for _ in range(250):
            if all(t["top_up_id"] in sandbox._orders for t in (credited, waiting, agreed)):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the sandbox orders were not opened")

    await orders_opened()
    # We credited a top-up the provider still has as unpaid; the provider paid one we wait for.
    note = PaymentNotification(
        out_trade_no=credited["top_up_id"], trade_no="T-1", amount_fen=1000, status="SUCCESS", nonce="n"
    )
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        await payments.apply_notification(session, svc.runtime, "alipay", note)
    sandbox._orders[waiting["top_up_id"]].state = OrderState.SUCCESS

    path = "/v1/admin/reconciliation/alipay"
    params = {"since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    assert (await svc.client.get(path, params=params, headers=svc.auth(user))).status_code == 403
    finance = {"Authorization": f"Bearer {svc.signer.issue('fin-1', kind='admin', roles=['finance'])}"}
    report = await svc.client.get(path, params=params, headers=finance)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["checked"] == 3
    problems = {m["id"]: m["problem"] for m in body["mismatches"]}
    assert problems == {
        credited["top_up_id"]: "we_credited_provider_did_not_pay",
        waiting["top_up_id"]: "provider_paid_we_wait",
    }
    bad = await svc.client.get("/v1/admin/reconciliation/paypal", params=params, headers=finance)
    assert bad.status_code == 400
    naive = await svc.client.get(path, params={"since": "2026-01-01T00:00:00", "until": "x"}, headers=finance)
    assert naive.status_code == 422


async def test_a_crash_before_commit_writes_nothing_and_a_commit_always_publishes(svc, payments_topic) -> None:
    user = await svc.funded_user(1000)
    request = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=300)

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "settled"
            raise Crash  # the process dies after the ledger write, before the commit
    assert await svc.balance(user) == 1000
    assert await sql(svc, "SELECT 1 FROM charges WHERE charge_id = :c", c=request.charge_id) == []
    assert await sql(svc, "SELECT 1 FROM outbox WHERE event_type LIKE 'asset.charge.%'") == []

    # Redelivered after the crash: applied once, and its event leaves through the outbox.
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "settled"
    settled = await payments_topic.wait_for(
        lambda e: e.type == "asset.charge.settled" and e.data.charge_id == request.charge_id
    )
    assert settled.data.balance_fen == 700

    # The relay marks the row after the broker acknowledged it, so the mark may trail the event.
    async def marked() -> bool:
        rows = await sql(svc, "SELECT published_at FROM outbox WHERE event_type = 'asset.charge.settled'")
        assert len(rows) == 1
        return rows[0][0] is not None

    await eventually(marked, timeout=5.0, what="the outbox row marked published")
    assert await svc.balance(user) == 700
