"""Integration: a charge the balance cannot cover is paid by the user's chosen provider (sandbox):
signed asynchronous notifications, declines, duplicates and forgeries, and unknown outcomes
resolved by querying the provider (real PG; notifications over HTTP to the in-process app)."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from asset_credit_svc.payments.providers import OrderState
from contracts import event_adapter
from contracts.events import ChargeRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


async def settle(svc, request: ChargeRequested) -> str:
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await charges.settle(session, svc.runtime, request, uuid.uuid4())


async def choose(svc, user: uuid.UUID, channel: str) -> None:
    response = await svc.client.put("/v1/wallet/payment-method", json={"channel": channel}, headers=svc.auth(user))
    assert response.status_code == 200, response.text


async def charge_status(svc, charge_id: uuid.UUID) -> tuple[str, str | None]:
    [(status, reason)] = await sql(svc, "SELECT status, failure_reason FROM charges WHERE charge_id = :c", c=charge_id)
    return status, reason


async def wait_status(svc, charge_id: uuid.UUID, expected: str, timeout: float = 10.0) -> tuple[str, str | None]:
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await charge_status(svc, charge_id))[0] != expected:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.05)
    return found


async def published(svc, charge_id: uuid.UUID) -> list[str]:
    rows = await sql(svc, "SELECT payload FROM outbox ORDER BY id")
    envelopes = [event_adapter.validate_json(bytes(r[0])) for r in rows]
    return [e.type for e in envelopes if getattr(e.data, "charge_id", None) == charge_id]


def request_for(user: uuid.UUID, amount_fen: int) -> ChargeRequested:
    return ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=amount_fen)


@pytest.fixture
async def quiet_svc(service_factory):
    """The sandbox takes a minute to pay: nothing is notified during a test."""
    async with service_factory(sandbox_pay_delay_min_s=60.0, sandbox_pay_delay_max_s=60.0) as service:
        yield service


async def test_payment_method_endpoints(svc) -> None:
    user = uuid.uuid4()
    path = "/v1/wallet/payment-method"
    assert (await svc.client.get(path, headers=svc.auth(user))).status_code == 404
    await choose(svc, user, "alipay")
    await choose(svc, user, "wechat")
    assert (await svc.client.get(path, headers=svc.auth(user))).json() == {"channel": "wechat"}
    bad = await svc.client.put(path, json={"channel": "paypal"}, headers=svc.auth(user))
    assert bad.status_code == 422
    assert (await svc.client.delete(path, headers=svc.auth(user))).status_code == 204
    assert (await svc.client.get(path, headers=svc.auth(user))).status_code == 404


async def test_balance_first_then_the_provider_pays_the_shortfall(svc) -> None:
    user = await svc.funded_user(100)
    await choose(svc, user, "alipay")
    request = request_for(user, 300)
    assert await settle(svc, request) == "awaiting_provider"
    await wait_status(svc, request.charge_id, "settled")
    assert await svc.balance(user) == 0
    assert await published(svc, request.charge_id) == ["asset.charge.settled"]
    entries = (await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))).json()["items"]
    assert [(e["kind"], e["amount_fen"]) for e in entries] == [
        ("charge", -300),
        ("provider_payment", 200),
        ("top_up", 100),
    ]
    # The provider's notification again (a duplicate) and a forged one change nothing.
    sandbox = svc.provider("alipay")
    order = await sandbox.query_order(charges.order_no(request.charge_id))
    assert order.state == OrderState.SUCCESS
    payload = {
        "out_trade_no": order.out_trade_no,
        "trade_no": order.trade_no,
        "amount_fen": 200,
        "status": "SUCCESS",
        "paid_at": datetime.now(UTC).isoformat(),
        "nonce": uuid.uuid4().hex,
    }
    body, headers = sandbox.signed_notification(payload)
    again = await svc.client.post("/v1/payments/alipay/notify", content=body, headers=headers)
    assert again.status_code == 200, again.text
    forged = await svc.client.post(
        "/v1/payments/alipay/notify", content=body, headers={**headers, "X-Sandbox-Signature": "0" * 64}
    )
    assert forged.status_code == 400
    wrong_channel = await svc.client.post("/v1/payments/wechat/notify", content=body, headers=headers)
    assert wrong_channel.status_code == 400
    other_amount, other_headers = sandbox.signed_notification({**payload, "amount_fen": 20000})
    mismatch = await svc.client.post("/v1/payments/alipay/notify", content=other_amount, headers=other_headers)
    assert mismatch.status_code == 400
    unknown, unknown_headers = sandbox.signed_notification({**payload, "out_trade_no": f"chg_{uuid.uuid4()}"})
    assert (
        await svc.client.post("/v1/payments/alipay/notify", content=unknown, headers=unknown_headers)
    ).status_code == 404
    assert await svc.balance(user) == 0
    assert await published(svc, request.charge_id) == ["asset.charge.settled"]
    unbalanced = await sql(
        svc, "SELECT transaction_id FROM postings GROUP BY transaction_id HAVING sum(amount_fen) <> 0"
    )
    assert unbalanced == []


async def test_a_declined_provider_payment_fails_the_charge(svc) -> None:
    user = await svc.funded_user(100)
    await choose(svc, user, "wechat")
    request = request_for(user, 299)  # the shortfall 199 ends in 99: the sandbox declines it
    assert await settle(svc, request) == "awaiting_provider"
    assert await wait_status(svc, request.charge_id, "failed") == ("failed", "provider_declined")
    assert await svc.balance(user) == 100
    assert await published(svc, request.charge_id) == ["asset.charge.failed"]


async def test_without_a_payment_method_a_short_balance_fails_at_once(svc) -> None:
    user = await svc.funded_user(100)
    request = request_for(user, 300)
    assert await settle(svc, request) == "failed"
    assert await charge_status(svc, request.charge_id) == ("failed", "insufficient_balance")


async def test_unknown_outcomes_are_resolved_by_querying_the_provider(quiet_svc) -> None:
    svc = quiet_svc
    user = uuid.uuid4()  # an empty wallet
    await choose(svc, user, "alipay")
    paid, declined, lost = request_for(user, 150), request_for(user, 250), request_for(user, 350)
    for request in (paid, declined, lost):
        assert await settle(svc, request) == "awaiting_provider"
    sandbox = svc.provider("alipay")

    async def opened() -> bool:
        return all(charges.order_no(r.charge_id) in sandbox._orders for r in (paid, declined, lost))

    deadline = asyncio.get_running_loop().time() + 5
    while not await opened():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    # The provider settled two orders but its notifications never came; the third it never saw.
    sandbox._orders[charges.order_no(paid.charge_id)].state = OrderState.SUCCESS
    sandbox._orders[charges.order_no(declined.charge_id)].state = OrderState.FAILED
    del sandbox._orders[charges.order_no(lost.charge_id)]

    now = datetime.now(UTC)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        # Not old enough yet: nothing is asked.
        assert (
            await charges.resolve_unknown_outcomes(
                session, svc.runtime, older_than=now - timedelta(minutes=1), give_up_before=now - timedelta(hours=1)
            )
            == 0
        )
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        # The unknown order is opened again rather than failed while it is young.
        assert (
            await charges.resolve_unknown_outcomes(
                session, svc.runtime, older_than=now + timedelta(seconds=1), give_up_before=now - timedelta(hours=1)
            )
            == 2
        )
    assert await charge_status(svc, paid.charge_id) == ("settled", None)
    assert await charge_status(svc, declined.charge_id) == ("failed", "provider_declined")
    assert await charge_status(svc, lost.charge_id) == ("awaiting_provider", None)
    assert charges.order_no(lost.charge_id) in sandbox._orders
    del sandbox._orders[charges.order_no(lost.charge_id)]
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert (
            await charges.resolve_unknown_outcomes(
                session, svc.runtime, older_than=now + timedelta(seconds=1), give_up_before=now + timedelta(seconds=1)
            )
            == 1
        )
    assert await charge_status(svc, lost.charge_id) == ("failed", "provider_unavailable")
    assert await svc.balance(user) == 0

    # The provider took the money for the given-up order after all: it lands in the wallet, once.
    payload = {
        "out_trade_no": charges.order_no(lost.charge_id),
        "trade_no": "SBX-LATE",
        "amount_fen": 350,
        "status": "SUCCESS",
        "paid_at": None,
        "nonce": uuid.uuid4().hex,
    }
    body, headers = sandbox.signed_notification(payload)
    for _ in range(2):
        late = await svc.client.post("/v1/payments/alipay/notify", content=body, headers=headers)
        assert late.status_code == 200, late.text
    assert await svc.balance(user) == 350
    assert await charge_status(svc, lost.charge_id) == ("failed", "provider_unavailable")
