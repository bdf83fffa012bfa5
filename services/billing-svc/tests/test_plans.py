"""Pricing plans by cabinet, region or default; the price as of borrowing; the purchase ceiling."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from billing_svc.consumers import consumer_specs
from billing_svc.pricing import Price, compute_fee
from billing_svc.rentals import service
from contracts import new_event
from contracts.events import BankReturned, ChargeSettled
from kit.auth import TokenSigner
from kit.db import unit_of_work
from kit.testing import staff_actions

if TYPE_CHECKING:
    from conftest import Billing, FakeDevice

prices = st.builds(
    Price,
    period_minutes=st.integers(1, 24 * 60),
    price_per_period_fen=st.integers(0, 10_000),
    free_minutes=st.integers(0, 120),
    daily_cap_fen=st.integers(0, 100_000),
    purchase_ceiling_fen=st.one_of(st.none(), st.integers(0, 200_000)),
)


@given(prices, st.integers(0, 30 * 86400), st.integers(0, 30 * 86400))
def test_fee_with_a_ceiling_is_monotonic_and_never_above_it(price: Price, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert compute_fee(low, price) <= compute_fee(high, price)
    if price.purchase_ceiling_fen is not None:
        assert compute_fee(high, price) <= price.purchase_ceiling_fen


def user(signer: TokenSigner) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue(str(uuid.uuid4()))}"}


def pricing_admin(signer: TokenSigner) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue('pricing-admin', kind='admin', roles=['operator'])}"}


def plan(scope: str, value: str, price: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"{scope} {value}",
        "scope": scope,
        "scope_value": value,
        "period_minutes": 60,
        "price_per_period_fen": price,
        "free_minutes": 5,
        "daily_cap_fen": 3000,
        **extra,
    }


@pytest.mark.integration
async def test_plans_apply_by_cabinet_then_region_then_default(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    admin = pricing_admin(signer)
    path = "/v1/admin/pricing-plans"
    assert (
        await billing.client.post(path, json=plan("cabinet", "CAB-BJ-1", 100), headers=user(signer))
    ).status_code == 403
    shown = await billing.client.get("/v1/pricing", params={"code": "CAB-BJ-1"})
    assert shown.json()["price_per_period_fen"] == 150  # no plan yet: the default settings
    assert shown.json()["plan_id"] is None

    cabinet = await billing.client.post(path, json=plan("cabinet", "CAB-BJ-1", 100), headers=admin)
    assert cabinet.status_code == 201, cabinet.text
    # The platform's audit trail has it, written in the plan's own transaction (kit.audit, issue 15).
    created = await staff_actions(billing.runtime.engine, "pricing_plan.create")
    assert (created[-1].target_type, created[-1].target_id) == ("pricing_plan", cabinet.json()["plan_id"])
    assert created[-1].after["price_per_period_fen"] == 100
    for body in (plan("region", "CAB-BJ-", 200), plan("region", "CAB-", 250), plan("default", "", 300)):
        assert (await billing.client.post(path, json=body, headers=admin)).status_code == 201
    duplicate = await billing.client.post(path, json=plan("region", "CAB-BJ-", 1), headers=admin)
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "plan_exists"
    assert (await billing.client.post(path, json=plan("default", "X", 1), headers=admin)).status_code == 422
    assert (await billing.client.post(path, json=plan("region", "A", -1), headers=admin)).status_code == 422

    async def price_of(code: str) -> int:
        response = await billing.client.get("/v1/pricing", params={"code": code})
        assert response.status_code == 200
        value: int = response.json()["price_per_period_fen"]
        return value

    assert await price_of("CAB-BJ-1") == 100
    assert await price_of("CAB-BJ-2") == 200
    assert await price_of("CAB-SH-1") == 250
    assert await price_of("BANK-1") == 300
    assert (await billing.client.get("/v1/pricing")).json()["price_per_period_fen"] == 300

    # A rental keeps the price it was borrowed at; a change applies to later rentals only.
    headers = user(signer)
    device.behaviours["CAB-BJ-1"] = device.ejects(f"BANK-{uuid.uuid4().hex[:8]}", "CAB-BJ-1")
    borrowed = await billing.client.post("/v1/rentals", json={"code": "CAB-BJ-1"}, headers=headers)
    assert borrowed.status_code == 201, borrowed.text
    assert borrowed.json()["price"]["price_per_period_fen"] == 100
    changed = await billing.client.patch(
        f"{path}/{cabinet.json()['plan_id']}", json={"price_per_period_fen": 120}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert await price_of("CAB-BJ-1") == 120
    update = (await staff_actions(billing.runtime.engine, "pricing_plan.update"))[-1]  # the old and new values
    assert (update.before["price_per_period_fen"], update.after["price_per_period_fen"]) == (100, 120)
    assert "name" not in update.after  # only what changed
    current = await billing.client.get("/v1/rentals/current", headers=headers)
    assert current.json()["price"]["price_per_period_fen"] == 100
    retired = await billing.client.patch(f"{path}/{cabinet.json()['plan_id']}", json={"active": False}, headers=admin)
    assert retired.status_code == 200
    assert await price_of("CAB-BJ-1") == 200
    listed = await billing.client.get(path, headers=admin)
    assert len(listed.json()["items"]) == 3
    missing = await billing.client.patch(f"{path}/{uuid.uuid4()}", json={"active": False}, headers=admin)
    assert missing.status_code == 404


@pytest.mark.integration
async def test_an_unreturned_bank_at_the_ceiling_is_sold_once(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    admin = pricing_admin(signer)
    body = plan("cabinet", "CAB-CEIL", 300, purchase_ceiling_fen=2500)
    assert (await billing.client.post("/v1/admin/pricing-plans", json=body, headers=admin)).status_code == 201
    headers = user(signer)
    bank = f"BANK-{uuid.uuid4().hex[:8]}"
    device.behaviours["CAB-CEIL"] = device.ejects(bank, "CAB-CEIL")
    borrowed = await billing.client.post("/v1/rentals", json={"code": "CAB-CEIL"}, headers=headers)
    assert borrowed.status_code == 201, borrowed.text
    rental_id = borrowed.json()["rental_id"]
    assert borrowed.json()["price"]["purchase_ceiling_fen"] == 2500

    now = datetime.now(UTC)
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.sell_unreturned(session, billing.runtime, now) == 0
        # Nine hours later: 9 periods of 300 = 2700 >= 2500 (daily cap 3000 not reached).
        await session.execute(
            text("UPDATE rentals SET started_at = :s WHERE id = :id"),
            {"s": now - timedelta(hours=9), "id": rental_id},
        )
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.sell_unreturned(session, billing.runtime, now) == 1
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.sell_unreturned(session, billing.runtime, now) == 0
    rental = (await billing.client.get(f"/v1/rentals/{rental_id}", headers=headers)).json()
    assert rental["state"] == "ended"
    assert rental["fee_fen"] == 2500
    assert rental["purchased"] is True


@pytest.mark.integration
async def test_every_plan_has_a_purchase_ceiling(billing: Billing, signer: TokenSigner) -> None:
    admin = pricing_admin(signer)
    assert (await billing.client.get("/v1/pricing")).json()["purchase_ceiling_fen"] == 9900  # no plan: settings
    created = await billing.client.post(
        "/v1/admin/pricing-plans", json=plan("region", "CAB-NOCEIL-", 100), headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["purchase_ceiling_fen"] == 9900
    path = f"/v1/admin/pricing-plans/{created.json()['plan_id']}"
    removed = await billing.client.patch(path, json={"purchase_ceiling_fen": None}, headers=admin)
    assert removed.status_code == 422
    assert (await billing.client.patch(path, json={"purchase_ceiling_fen": 5000}, headers=admin)).json()[
        "purchase_ceiling_fen"
    ] == 5000
    refused = await billing.client.post(
        "/v1/admin/pricing-plans", json=plan("region", "CAB-X-", 1, purchase_ceiling_fen=None), headers=admin
    )
    assert refused.status_code == 422


@pytest.mark.integration
async def test_a_purchased_bank_returned_within_30_days_is_bought_back_minus_the_fee(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    headers = user(signer)
    support = {"Authorization": f"Bearer {signer.issue('finance-1', kind='admin', roles=['finance'])}"}
    bank = f"BANK-{uuid.uuid4().hex[:8]}"
    device.behaviours["CAB-LOST"] = device.ejects(bank, "CAB-LOST")
    borrowed = await billing.client.post("/v1/rentals", json={"code": "CAB-LOST"}, headers=headers)
    assert borrowed.status_code == 201, borrowed.text
    rental_id = borrowed.json()["rental_id"]
    assert borrowed.json()["price"]["purchase_ceiling_fen"] == 9900  # the default plan-less price has one

    now = datetime.now(UTC)
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        # Five days and more at 150 per 30 min capped at 2000 a day: 10,000 >= 9,900.
        await session.execute(
            text("UPDATE rentals SET started_at = :s WHERE id = :id"), {"s": now - timedelta(days=5), "id": rental_id}
        )
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.sell_unreturned(session, billing.runtime, now) == 1
    async with billing.runtime.engine.connect() as conn:
        charge_id, user_id = (
            await conn.execute(text("SELECT charge_id, user_id FROM rentals WHERE id = :id"), {"id": rental_id})
        ).one()
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        settled = ChargeSettled(
            charge_id=charge_id,
            rental_id=uuid.UUID(rental_id),
            user_id=user_id,
            amount_fen=9900,
            balance_fen=100,
            settled_at=now,
            coupon_fen=900,
            paid_fen=9000,
        )
        await service.on_charge_settled(session, settled)

    [returns] = [spec for spec in consumer_specs(billing.runtime) if "device.bank.returned" in spec.handlers]
    handle = returns.handlers["device.bank.returned"]

    async def returned(at: datetime) -> None:
        data = BankReturned(
            report_id=f"CAB-LOST/{uuid.uuid4().hex}",
            bank_id=bank,
            cabinet_id="CAB-LOST",
            slot=1,
            battery_pct=80,
            returned_at=at,
            device_reported_at=at,
            received_at=at,
        )
        async with unit_of_work(billing.runtime.sessionmaker) as session:
            await handle(session, new_event(data, key=bank, producer="device-svc-test"))

    await returned(now - timedelta(minutes=1))  # a report from before the sale buys nothing back
    await returned(now + timedelta(days=3))
    await returned(now + timedelta(days=3, minutes=5))  # reported twice: bought back once
    corrections = (await billing.client.get(f"/v1/admin/rentals/{rental_id}/corrections", headers=support)).json()
    [buyback] = corrections["items"]
    # The fee becomes the 2,000 buy-back fee; the coupon's 900 stays applied, so the money paid
    # beyond 1,100 comes back: 9,000 - 1,100.
    assert (buyback["action"], buyback["refund_fen"]) == ("lower_fee", 7900)
    rental = (await billing.client.get(f"/v1/rentals/{rental_id}", headers=headers)).json()
    assert (rental["fee_fen"], rental["paid_fen"], rental["purchased"]) == (2000, 1100, True)
    async with billing.runtime.engine.connect() as conn:
        refunds = (
            await conn.execute(
                text("SELECT count(*) FROM outbox WHERE convert_from(payload, 'UTF8') LIKE :p"),
                {"p": f"%billing.refund.requested%{rental_id}%"},
            )
        ).scalar_one()
    assert refunds == 1


@pytest.mark.integration
async def test_a_purchased_bank_returned_after_30_days_is_not_bought_back(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    headers = user(signer)
    bank = f"BANK-{uuid.uuid4().hex[:8]}"
    device.behaviours["CAB-LATE"] = device.ejects(bank, "CAB-LATE")
    borrowed = await billing.client.post("/v1/rentals", json={"code": "CAB-LATE"}, headers=headers)
    rental_id = borrowed.json()["rental_id"]
    now = datetime.now(UTC)
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        await session.execute(
            text("UPDATE rentals SET started_at = :s WHERE id = :id"), {"s": now - timedelta(days=6), "id": rental_id}
        )
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.sell_unreturned(session, billing.runtime, now) == 1
        await session.execute(text("UPDATE rentals SET state = 'settled' WHERE id = :id"), {"id": rental_id})
    [returns] = [spec for spec in consumer_specs(billing.runtime) if "device.bank.returned" in spec.handlers]
    later = now + timedelta(days=31)
    data = BankReturned(
        report_id=f"CAB-LATE/{uuid.uuid4().hex}",
        bank_id=bank,
        cabinet_id="CAB-LATE",
        slot=1,
        battery_pct=80,
        returned_at=later,
        device_reported_at=later,
        received_at=later,
    )
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        await returns.handlers["device.bank.returned"](session, new_event(data, key=bank, producer="test"))
    rental = (await billing.client.get(f"/v1/rentals/{rental_id}", headers=headers)).json()
    assert rental["fee_fen"] == 9900
