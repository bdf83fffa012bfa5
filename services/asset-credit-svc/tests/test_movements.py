"""Integration: GET /v1/wallet/movements, the user's top-ups, withdrawals and refunds with status and
channel (real PG, sandbox providers)."""

import uuid

import pytest

from asset_credit_svc.charges import service as charges
from asset_credit_svc.refunds import service as refunds
from contracts.events import ChargeRequested, RefundRequested
from kit.db import unit_of_work
from kit.testing import eventually

pytestmark = pytest.mark.integration


async def movements(svc, user: uuid.UUID, **params) -> dict:
    response = await svc.client.get("/v1/wallet/movements", params=params, headers=svc.auth(user))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_movements_list_top_ups_withdrawals_and_refunds_newest_first(svc) -> None:
    user = uuid.uuid4()
    alipay = await svc.top_up(user, 1000, "alipay")
    await svc.wait_top_up(user, alipay["top_up_id"])
    declined = await svc.top_up(user, 1099, "wechat")  # the sandbox declines amounts ending in 99
    assert (await svc.wait_top_up(user, declined["top_up_id"]))["status"] == "failed"
    rental_id = uuid.uuid4()
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        charge = ChargeRequested(charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user, amount_fen=300)
        assert await charges.settle(session, svc.runtime, charge, uuid.uuid4()) == "settled"
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        request = RefundRequested(
            refund_id=uuid.uuid4(), rental_id=rental_id, user_id=user, amount_fen=100, reason="correction"
        )
        assert await refunds.refund(session, svc.runtime, request, uuid.uuid4()) == "settled"
    withdrawal = await svc.client.post(
        "/v1/wallet/withdrawals", json={"amount_fen": 500}, headers={**svc.auth(user), "Idempotency-Key": "w"}
    )
    assert withdrawal.status_code == 201, withdrawal.text
    other = await svc.funded_user(700)  # someone else's money never shows

    async def withdrawn() -> dict | None:
        page = await movements(svc, user)
        return page if page["items"][0]["status"] == "succeeded" else None

    page = await eventually(withdrawn, what="the withdrawal part confirmed by the provider")
    rows = [(m["kind"], m["amount_fen"], m["channel"], m["status"]) for m in page["items"]]
    assert rows == [
        ("withdrawal", -500, "alipay", "succeeded"),
        ("refund", 100, "balance", "settled"),
        ("top_up", 1099, "wechat", "failed"),
        ("top_up", 1000, "alipay", "succeeded"),
    ]
    assert page["next_before"] is None
    first, _, failed, topped = page["items"]
    assert first["reference_id"] == withdrawal.json()["withdrawal_id"]
    assert first["completed_at"] is not None
    assert failed["failure_reason"] and failed["completed_at"] is not None
    assert topped["movement_id"] == topped["reference_id"] == alipay["top_up_id"]
    assert (await svc.balance(user)) == 1000 - 300 + 100 - 500
    assert len((await movements(svc, other))["items"]) == 1

    only_top_ups = await movements(svc, user, kind="top_up")
    assert [m["kind"] for m in only_top_ups["items"]] == ["top_up", "top_up"]
    both = await movements(svc, user, kind=["refund", "withdrawal"])
    assert [m["kind"] for m in both["items"]] == ["withdrawal", "refund"]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict = {"limit": 1} | ({"before": cursor} if cursor else {})
        one = await movements(svc, user, **params)
        seen += [m["movement_id"] for m in one["items"]]
        cursor = one["next_before"]
        if cursor is None:
            break
    assert seen == [m["movement_id"] for m in page["items"]]


async def test_movements_refuse_bad_input_with_a_code(svc) -> None:
    user = uuid.uuid4()
    assert (await movements(svc, user))["items"] == []
    for params, status, code in (
        ({"before": "not-a-cursor"}, 400, "invalid_cursor"),
        ({"kind": "deposit"}, 422, None),
        ({"limit": 0}, 422, None),
    ):
        response = await svc.client.get("/v1/wallet/movements", params=params, headers=svc.auth(user))
        assert response.status_code == status, response.text
        if code:
            assert response.json()["code"] == code
    assert (await svc.client.get("/v1/wallet/movements")).status_code == 401
