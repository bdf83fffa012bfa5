"""Integration: receipts for a paid rental and a top-up, from what was settled (real PG, real flows)."""

import uuid
from typing import Any

import pytest

from asset_credit_svc.charges import service as charges
from asset_credit_svc.payments.order_numbers import to_wire
from contracts.events import ChargeRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


async def test_receipts_for_a_top_up_and_a_paid_rental(svc: Any) -> None:
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 5000)
    pending = await svc.client.get(f"/v1/wallet/top-ups/{top_up['top_up_id']}/receipt", headers=svc.auth(user))
    assert pending.status_code in (200, 404)  # the sandbox may have paid already
    await svc.wait_top_up(user, top_up["top_up_id"])
    receipt = (await svc.client.get(f"/v1/wallet/top-ups/{top_up['top_up_id']}/receipt", headers=svc.auth(user))).json()
    assert (receipt["kind"], receipt["total_fen"], receipt["paid_by_channel_fen"], receipt["channel"]) == (
        "top_up",
        5000,
        5000,
        "alipay",
    )
    assert receipt["out_trade_no"] == to_wire(top_up["top_up_id"]) and receipt["channel_trade_no"]
    assert receipt["tax"] is None and receipt["paid_at"] is not None  # a prepayment: VAT when spent

    rental = uuid.uuid4()
    request = ChargeRequested(charge_id=uuid.uuid4(), rental_id=rental, user_id=user, amount_fen=350)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "settled"
    paid = (await svc.client.get(f"/v1/wallet/rentals/{rental}/receipt", headers=svc.auth(user))).json()
    assert (paid["kind"], paid["total_fen"], paid["paid_from_balance_fen"], paid["paid_by_channel_fen"]) == (
        "rental",
        350,
        350,
        0,
    )
    assert paid["tax"] == {"name": "VAT (增值税)", "rate_percent": 13, "included_fen": 40}  # 350 x 13/113 = 40.27
    assert paid["channel"] is None and paid["out_trade_no"] is None

    stranger = uuid.uuid4()
    for path in (f"/v1/wallet/rentals/{rental}/receipt", f"/v1/wallet/top-ups/{top_up['top_up_id']}/receipt"):
        refused = await svc.client.get(path, headers=svc.auth(stranger))
        assert (refused.status_code, refused.json()["code"]) == (404, "receipt_not_found")
    unknown = await svc.client.get(f"/v1/wallet/rentals/{uuid.uuid4()}/receipt", headers=svc.auth(user))
    assert unknown.status_code == 404


def test_vat_included_is_rounded_half_up() -> None:
    from asset_credit_svc.receipts.endpoints import vat_included

    assert [vat_included(total, 13) for total in (0, 1, 4, 5, 113, 350, 9900)] == [0, 0, 0, 1, 13, 40, 1139]
    assert vat_included(106, 6) == 6 and vat_included(1000, 0) == 0
