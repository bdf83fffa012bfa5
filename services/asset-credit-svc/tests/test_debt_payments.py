"""Integration: a rental fee the wallet did not cover becomes a debt the user pays through a channel (real PG,
the broker for the outbox's events, the channel's signed notifications over HTTP to the in-process app): the
notification credits the wallet and settles the rental's failed charge in one ledger transaction, once; a
decline or an order never paid leaves the debt payable; money for a rental paid meanwhile stays in the wallet."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from asset_credit_svc.debts import service as debts
from asset_credit_svc.payments.order_numbers import to_wire
from asset_credit_svc.payments.providers import OrderState
from contracts import event_adapter
from contracts.events import ChargeRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def sql(svc: Any, query: str, **params: Any) -> list[Any]:
    async with svc.runtime.engine.connect() as conn:
        return list((await conn.execute(text(query), params)).all())


async def settle(svc: Any, request: ChargeRequested) -> str:
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        return await charges.settle(session, svc.runtime, request, uuid.uuid4())


async def settled_events(svc: Any, rental_id: uuid.UUID) -> list[tuple[str, uuid.UUID]]:
    rows = await sql(svc, "SELECT payload FROM outbox ORDER BY id")
    envelopes = [event_adapter.validate_json(bytes(r[0])) for r in rows]
    return [
        (e.type, e.data.charge_id)  # type: ignore[union-attr]
        for e in envelopes
        if getattr(e.data, "rental_id", None) == rental_id and e.type.startswith("asset.charge.")
    ]


async def fund(svc: Any, user: uuid.UUID, amount_fen: int, channel: str = "wechat") -> None:
    """A top-up paid at once: the test sends the channel's notification (the quiet sandbox would wait a minute)."""
    top_up = await svc.top_up(user, amount_fen, channel)
    body, headers = svc.provider(channel).signed_notification(
        {
            "out_trade_no": top_up["top_up_id"],
            "trade_no": f"SBX-{uuid.uuid4().hex[:12]}",
            "amount_fen": amount_fen,
            "status": "SUCCESS",
            "paid_at": datetime.now(UTC).isoformat(),
            "nonce": uuid.uuid4().hex,
        }
    )
    response = await svc.client.post(f"/v1/payments/{channel}/notify", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def an_unpaid_rental(svc: Any, balance_fen: int, fee_fen: int) -> tuple[uuid.UUID, ChargeRequested]:
    user = uuid.uuid4()
    await fund(svc, user, balance_fen)
    request = ChargeRequested(
        charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=fee_fen, duration_seconds=60
    )
    assert await settle(svc, request) == "failed"
    return user, request


async def debts_of(svc: Any, user: uuid.UUID) -> dict[str, Any]:
    response = await svc.client.get("/v1/wallet/debts", headers=svc.auth(user))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def start(svc: Any, user: uuid.UUID, rental_id: uuid.UUID, channel: str = "alipay", key: str | None = None):
    return await svc.client.post(
        f"/v1/wallet/debts/{rental_id}/payments",
        json={"channel": channel},
        headers={**svc.auth(user), "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def payment(svc: Any, user: uuid.UUID, payment_id: str) -> dict[str, Any]:
    response = await svc.client.get(f"/v1/wallet/debt-payments/{payment_id}", headers=svc.auth(user))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_payment(svc: Any, user: uuid.UUID, payment_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await payment(svc, user, payment_id))["status"] == "pending":
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.05)
    return found


def notification(payment_id: str, amount_fen: int, status: str = "SUCCESS") -> dict[str, Any]:
    return {
        "out_trade_no": debts.order_no(uuid.UUID(payment_id)),
        "trade_no": f"SBX-{uuid.uuid4().hex[:12]}",
        "amount_fen": amount_fen,
        "status": status,
        "paid_at": datetime.now(UTC).isoformat() if status == "SUCCESS" else None,
        "nonce": uuid.uuid4().hex,
    }


async def notify(svc: Any, channel: str, payload: dict[str, Any]) -> int:
    body, headers = svc.provider(channel).signed_notification(payload)
    response = await svc.client.post(f"/v1/payments/{channel}/notify", content=body, headers=headers)
    return int(response.status_code)


async def unbalanced(svc: Any) -> list[Any]:
    return await sql(svc, "SELECT transaction_id FROM postings GROUP BY transaction_id HAVING sum(amount_fen) <> 0")


@pytest.fixture
async def quiet_svc(service_factory: Any) -> Any:
    """The sandbox takes a minute to pay: the test sends the channel's notifications itself."""
    async with service_factory(sandbox_pay_delay_min_s=60.0, sandbox_pay_delay_max_s=60.0) as service:
        yield service


async def test_an_unpaid_fee_is_paid_through_a_channel_and_settles_the_rental_once(svc: Any) -> None:
    user, request = await an_unpaid_rental(svc, balance_fen=100, fee_fen=300)
    owed = await debts_of(svc, user)
    assert owed["total_fen"] == 300
    assert [(d["rental_id"], d["charge_id"], d["reason"]) for d in owed["items"]] == [
        (str(request.rental_id), str(request.charge_id), "insufficient_balance")
    ]

    started = await start(svc, user, request.rental_id, "wechat", key="pay-debt-1")
    assert started.status_code == 201, started.text
    made = started.json()
    assert (made["amount_fen"], made["status"], made["channel"]) == (300, "pending", "wechat")
    again = await start(svc, user, request.rental_id, "wechat", key="pay-debt-1")
    assert again.status_code == 200
    assert again.json()["payment_id"] == made["payment_id"]
    assert (await start(svc, user, request.rental_id, "alipay", key="pay-debt-1")).status_code == 409
    params = await svc.client.post(f"/v1/wallet/debt-payments/{made['payment_id']}/pay", headers=svc.auth(user))
    assert params.status_code == 200, params.text
    assert params.json()["pay_params"]["trade_no"]

    paid = await wait_payment(svc, user, made["payment_id"])  # the sandbox pays and notifies by itself
    assert paid["status"] == "succeeded"
    assert paid["settled_charge_id"] == str(request.charge_id)
    [(status, reason)] = await sql(
        svc, "SELECT status, failure_reason FROM charges WHERE charge_id = :c", c=request.charge_id
    )
    assert (status, reason) == ("settled", None)
    assert await svc.balance(user) == 100  # the channel paid the fee; the wallet kept its own money
    entries = (await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))).json()["items"]
    assert [(e["kind"], e["amount_fen"]) for e in entries] == [
        ("charge", -300),
        ("provider_payment", 300),
        ("top_up", 100),
    ]
    assert await settled_events(svc, request.rental_id) == [
        ("asset.charge.failed", request.charge_id),
        ("asset.charge.settled", request.charge_id),
    ]
    assert (await debts_of(svc, user)) == {"items": [], "total_fen": 0}
    moved = (await svc.client.get("/v1/wallet/movements", headers=svc.auth(user))).json()["items"]
    assert [(m["kind"], m["channel"], m["amount_fen"], m["status"], m["reference_id"]) for m in moved] == [
        ("debt_payment", "wechat", 300, "succeeded", str(request.rental_id)),
        ("top_up", "wechat", 100, "succeeded", moved[1]["reference_id"]),
    ]
    receipt = (await svc.client.get(f"/v1/wallet/rentals/{request.rental_id}/receipt", headers=svc.auth(user))).json()
    assert (receipt["total_fen"], receipt["paid_by_channel_fen"], receipt["paid_from_balance_fen"]) == (300, 300, 0)
    assert (receipt["channel"], receipt["out_trade_no"]) == ("wechat", to_wire(f"debt_{made['payment_id']}"))
    assert receipt["channel_trade_no"]

    # The channel repeats its notification: nothing more moves.
    order = await svc.provider("wechat").query_order(debts.order_no(uuid.UUID(made["payment_id"])))
    repeat = {**notification(made["payment_id"], 300), "trade_no": order.trade_no}
    assert await notify(svc, "wechat", repeat) == 200
    assert await notify(svc, "wechat", {**repeat, "nonce": uuid.uuid4().hex}) == 200
    assert await notify(svc, "alipay", repeat) == 400  # another channel's
    assert await notify(svc, "wechat", {**repeat, "amount_fen": 30000}) == 400
    assert await svc.balance(user) == 100
    assert len(await settled_events(svc, request.rental_id)) == 2
    # Nothing is owed any more: another payment is refused.
    assert (await start(svc, user, request.rental_id)).json()["code"] == "debt_not_found"
    assert await unbalanced(svc) == []


async def test_a_decline_or_an_order_never_paid_leaves_the_debt_payable(quiet_svc: Any) -> None:
    svc = quiet_svc
    user, request = await an_unpaid_rental(svc, balance_fen=100, fee_fen=450)
    declined = (await start(svc, user, request.rental_id, "alipay")).json()
    assert await notify(svc, "alipay", notification(declined["payment_id"], 450, "FAILED")) == 200
    assert (await payment(svc, user, declined["payment_id"]))["status"] == "failed"
    assert (await payment(svc, user, declined["payment_id"]))["failure_reason"] == "declined"
    refused = await svc.client.post(f"/v1/wallet/debt-payments/{declined['payment_id']}/pay", headers=svc.auth(user))
    assert refused.status_code == 409
    assert refused.json()["code"] == "debt_payment_not_pending"
    assert (await debts_of(svc, user))["total_fen"] == 450

    # Paid by card, but the bank never sends the notification and the user never pays: the sweep asks the
    # channel, and after the give-up time the payment expires; the rental is still owed.
    abandoned = (await start(svc, user, request.rental_id, "bank_card")).json()
    assert (
        await svc.client.post(f"/v1/wallet/debt-payments/{abandoned['payment_id']}/pay", headers=svc.auth(user))
    ).status_code == 200
    now = datetime.now(UTC)
    async with unit_of_work(svc.runtime.sessionmaker) as session:  # young: asked, still unpaid, kept
        assert (
            await debts.resolve_stale(
                session, svc.runtime, older_than=now + timedelta(seconds=1), expire_before=now - timedelta(hours=1)
            )
            == 0
        )
    assert (await payment(svc, user, abandoned["payment_id"]))["status"] == "pending"
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert (
            await debts.resolve_stale(
                session, svc.runtime, older_than=now + timedelta(seconds=1), expire_before=now + timedelta(seconds=1)
            )
            == 1
        )
    expired = await payment(svc, user, abandoned["payment_id"])
    assert (expired["status"], expired["failure_reason"]) == ("failed", "expired")
    assert (await debts_of(svc, user))["total_fen"] == 450
    assert await svc.balance(user) == 100

    # A third try through WeChat Pay: its notification is lost, the sweep finds it paid at the channel.
    third = (await start(svc, user, request.rental_id, "wechat")).json()
    await svc.client.post(f"/v1/wallet/debt-payments/{third['payment_id']}/pay", headers=svc.auth(user))
    sandbox = svc.provider("wechat")
    sandbox._orders[debts.order_no(uuid.UUID(third["payment_id"]))].state = OrderState.SUCCESS
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert (
            await debts.resolve_stale(
                session, svc.runtime, older_than=now + timedelta(seconds=1), expire_before=now - timedelta(hours=1)
            )
            == 1
        )
    settled = await payment(svc, user, third["payment_id"])
    assert (settled["status"], settled["settled_charge_id"]) == ("succeeded", str(request.charge_id))
    assert (await debts_of(svc, user))["total_fen"] == 0

    # The expired card payment is paid after all: the money is taken in once, into the wallet (the rental is paid).
    late = notification(abandoned["payment_id"], 450)
    assert await notify(svc, "bank_card", late) == 200
    assert await notify(svc, "bank_card", {**late, "nonce": uuid.uuid4().hex}) == 200
    taken = await payment(svc, user, abandoned["payment_id"])
    assert (taken["status"], taken["settled_charge_id"]) == ("succeeded", None)
    assert await svc.balance(user) == 100 + 450
    assert [e for e, _ in await settled_events(svc, request.rental_id)] == [
        "asset.charge.failed",
        "asset.charge.settled",
    ]
    assert await unbalanced(svc) == []


async def test_money_for_a_rental_paid_meanwhile_stays_in_the_wallet(quiet_svc: Any) -> None:
    svc = quiet_svc
    user, request = await an_unpaid_rental(svc, balance_fen=100, fee_fen=300)
    pending = (await start(svc, user, request.rental_id, "alipay")).json()
    # Meanwhile the user topped up and billing asked again (a new attempt), which the wallet now covers.
    await fund(svc, user, 500)
    second = request.model_copy(update={"charge_id": uuid.uuid4()})
    assert await settle(svc, second) == "settled"
    assert await svc.balance(user) == 300

    assert await notify(svc, "alipay", notification(pending["payment_id"], 300)) == 200
    credited = await payment(svc, user, pending["payment_id"])
    assert (credited["status"], credited["settled_charge_id"]) == ("succeeded", None)
    assert await svc.balance(user) == 600  # the rental was collected once; the channel's money is the user's
    assert await settled_events(svc, request.rental_id) == [
        ("asset.charge.failed", request.charge_id),
        ("asset.charge.settled", second.charge_id),
    ]
    assert await unbalanced(svc) == []


async def test_only_an_owed_rental_of_ones_own_can_be_paid(svc: Any) -> None:
    user, request = await an_unpaid_rental(svc, balance_fen=100, fee_fen=300)
    stranger = uuid.uuid4()
    for who, rental in ((stranger, request.rental_id), (user, uuid.uuid4())):
        refused = await start(svc, who, rental)
        assert refused.status_code == 404
        assert refused.json()["code"] == "debt_not_found"
    assert (await start(svc, user, request.rental_id, "paypal")).status_code == 422
    # Support waived the debt: nothing is owed, nothing can be paid.
    async with svc.runtime.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO waived_rentals (rental_id, user_id, waived_fen, at) VALUES (:r, :u, 300, now())"),
            {"r": request.rental_id, "u": user},
        )
    assert (await debts_of(svc, user))["items"] == []
    assert (await start(svc, user, request.rental_id)).status_code == 404
    unknown = await svc.client.get(f"/v1/wallet/debt-payments/{uuid.uuid4()}", headers=svc.auth(user))
    assert unknown.status_code == 404
