"""Integration: top-ups whose notification never came are asked at their provider (issue 14; found by `make chaos`:
top-ups paid while asset-credit was down stayed pending forever). Real PostgreSQL; the sandbox provider is the
channel and is asked through the adapters' query API, as Alipay's trade.query would be."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from asset_credit_svc.deposit import service as deposits
from asset_credit_svc.payments import service as top_ups
from asset_credit_svc.payments.providers import OrderState
from asset_credit_svc.payments.sandbox import SandboxProvider
from asset_credit_svc.settings import DEV_SANDBOX_PAYMENT_SECRET
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


async def state(svc, top_up_id: str) -> tuple[str, str | None]:
    [(status, reason)] = await sql(svc, "SELECT status, failure_reason FROM top_ups WHERE id = :i", i=top_up_id)
    return status, reason


async def sweep(svc, *, older_than: datetime, expire_before: datetime) -> dict[str, int]:
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await top_ups.resolve_stale_top_ups(
            session, svc.runtime, older_than=older_than, expire_before=expire_before
        )


async def wait_opened(sandbox, *numbers: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not all(n in sandbox._orders for n in numbers):
        assert asyncio.get_running_loop().time() < deadline, "the orders were not opened at the provider"
        await asyncio.sleep(0.02)


async def assert_books(svc) -> None:
    assert (
        await sql(svc, "SELECT transaction_id FROM postings GROUP BY transaction_id HAVING sum(amount_fen) <> 0") == []
    )
    assert (await sql(svc, "SELECT coalesce(sum(balance_fen), 0) FROM accounts"))[0][0] == 0


@pytest.fixture
async def quiet_svc(service_factory):
    """The sandbox would pay in a minute and the app's own sweeper is off: the test decides what happened."""
    async with service_factory(
        sandbox_pay_delay_min_s=60.0, sandbox_pay_delay_max_s=60.0, top_up_sweep_interval_s=0
    ) as service:
        yield service


async def test_stale_top_ups_are_settled_reopened_or_closed_by_asking_the_provider(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()
    made = [await svc.top_up(user, amount) for amount in (1500, 2500, 3500, 4500)]
    paid, declined, lost, unpaid = made
    sandbox = svc.provider("alipay")
    await wait_opened(sandbox, *(t["top_up_id"] for t in made))
    # The provider took one payment and declined another, but their notifications never came; it lost the
    # third order (never opened there); nobody paid the fourth.
    sandbox._orders[paid["top_up_id"]].state = OrderState.SUCCESS
    sandbox._orders[paid["top_up_id"]].paid_at = datetime.now(UTC)
    sandbox._orders[declined["top_up_id"]].state = OrderState.FAILED
    del sandbox._orders[lost["top_up_id"]]

    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=1)
    # Younger than the threshold: nobody is asked.
    assert await sweep(svc, older_than=now - timedelta(minutes=1), expire_before=long_ago) == {}
    assert await sweep(svc, older_than=now + timedelta(seconds=1), expire_before=long_ago) == {
        "succeeded": 1,
        "failed": 1,
        "reopened": 1,
        "waiting": 1,
    }
    assert await state(svc, paid["top_up_id"]) == ("succeeded", None)
    assert await state(svc, declined["top_up_id"]) == ("failed", "declined")
    assert await state(svc, lost["top_up_id"]) == ("pending", None)
    await wait_opened(sandbox, lost["top_up_id"])  # opened again under the same number, after the commit
    assert await svc.balance(user) == 1500
    # The notification arrives at last: a duplicate, credited once.
    body, headers = sandbox.signed_notification(
        {
            "out_trade_no": paid["top_up_id"],
            "trade_no": sandbox._orders[paid["top_up_id"]].trade_no,
            "amount_fen": 1500,
            "status": "SUCCESS",
            "paid_at": None,
            "nonce": uuid.uuid4().hex,
        }
    )
    assert (await svc.client.post("/v1/payments/alipay/notify", content=body, headers=headers)).status_code == 200
    assert await svc.balance(user) == 1500
    assert (await sql(svc, "SELECT count(*) FROM outbox WHERE event_type = 'asset.wallet.topped_up'"))[0][0] == 1

    # Past the expiry: the unpaid ones are closed at the provider and failed as expired.
    assert await sweep(svc, older_than=now + timedelta(seconds=1), expire_before=now + timedelta(seconds=1)) == {
        "expired": 2
    }
    assert await state(svc, lost["top_up_id"]) == ("failed", "expired")
    assert await state(svc, unpaid["top_up_id"]) == ("failed", "expired")
    assert sandbox._orders[unpaid["top_up_id"]].state == OrderState.FAILED  # closed: it will not be paid
    answer = (await svc.client.get(f"/v1/wallet/top-ups/{unpaid['top_up_id']}", headers=svc.auth(user))).json()
    assert answer["status"] == "failed" and answer["failure_reason"] == "expired"

    # A payment that slipped in before the close was taken all the same: it is credited, once.
    late, late_headers = sandbox.signed_notification(
        {
            "out_trade_no": lost["top_up_id"],
            "trade_no": "SBX-LATE",
            "amount_fen": 3500,
            "status": "SUCCESS",
            "paid_at": None,
            "nonce": uuid.uuid4().hex,
        }
    )
    for _ in range(2):
        response = await svc.client.post("/v1/payments/alipay/notify", content=late, headers=late_headers)
        assert response.status_code == 200
    assert await state(svc, lost["top_up_id"]) == ("succeeded", None)
    assert await svc.balance(user) == 5000
    assert await sweep(svc, older_than=now + timedelta(minutes=1), expire_before=now + timedelta(minutes=1)) == {}
    await assert_books(svc)


async def test_the_app_asks_by_itself_when_every_notification_is_lost(service_factory) -> None:
    """The provider pays but none of its notifications gets through (its retries ran out while this service
    was down): the app's own periodic job (kit.periodic) finds the top-up and credits it."""
    async with service_factory(sandbox_notify_attempts=0, top_up_sweep_interval_s=0.2, top_up_query_after_s=0.5) as svc:
        user = uuid.uuid4()
        top_up = await svc.top_up(user, 2200, channel="wechat")
        assert (await svc.wait_top_up(user, top_up["top_up_id"], timeout=30.0))["status"] == "succeeded"
        assert await svc.balance(user) == 2200
        await assert_books(svc)


async def test_the_sandbox_remembers_its_orders_across_a_restart(svc, tmp_path) -> None:
    """As a real provider does while our service is down (`make chaos` kills asset-credit): an order left
    waiting is paid and notified after the restart, and a paid one can still be queried and refunded."""
    notify = httpx.AsyncClient(transport=httpx.ASGITransport(app=svc.app), base_url="http://asset-credit-svc")
    secret = DEV_SANDBOX_PAYMENT_SECRET.encode()
    state_file = tmp_path / "alipay.json"
    providers = svc.runtime.extras["payment_providers"]
    before = SandboxProvider("alipay", secret, notify, pay_delay_s=(60.0, 60.0), state_file=state_file)
    providers["alipay"] = before
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 2600)
    await wait_opened(before, top_up["top_up_id"])
    await before.aclose()  # the process dies before its provider paid

    after = SandboxProvider("alipay", secret, notify, pay_delay_s=(0.01, 0.05), state_file=state_file)
    providers["alipay"] = after
    assert (await after.query_order(top_up["top_up_id"])).state == OrderState.PENDING
    after.resume()
    assert (await svc.wait_top_up(user, top_up["top_up_id"], timeout=30.0))["status"] == "succeeded"

    again = SandboxProvider("alipay", secret, notify, state_file=state_file)
    answer = await again.query_order(top_up["top_up_id"])
    assert (answer.state, answer.amount_fen) == (OrderState.SUCCESS, 2600)
    await again.refund(top_up["top_up_id"], "r-1", 600)
    assert (
        await SandboxProvider("alipay", secret, notify, state_file=state_file).query_refund(top_up["top_up_id"], "r-1")
    ).amount_fen == 600
    await notify.aclose()


async def test_a_deposit_payment_whose_notification_was_lost_is_asked_too(quiet_svc) -> None:
    """A pending deposit payment blocks a new one: it must not wait for a notification that will never come."""
    svc = quiet_svc
    user = uuid.uuid4()
    paid = await svc.client.post(
        "/v1/deposit/payments",
        json={"channel": "wechat"},
        headers={**svc.auth(user), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert paid.status_code == 201, paid.text
    number = deposits.order_no(uuid.UUID(paid.json()["operation_id"]))
    sandbox = svc.provider("wechat")
    await wait_opened(sandbox, number)
    older_than = datetime.now(UTC) + timedelta(seconds=1)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await deposits.resolve_stale_payments(session, svc.runtime, older_than) == 0  # unpaid: it waits
    sandbox._orders[number].state = OrderState.SUCCESS
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await deposits.resolve_stale_payments(session, svc.runtime, older_than) == 1
    deposit = (await svc.client.get("/v1/deposit", headers=svc.auth(user))).json()
    assert deposit["held_fen"] == deposit["required_fen"]
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await deposits.resolve_stale_payments(session, svc.runtime, older_than) == 0
    await assert_books(svc)
