"""6.1.5 across the running mesh: a rental fee the wallet does not cover becomes a debt that refuses new borrows;
the user pays it through a channel (the Alipay sandbox, which pays and sends its signed notification), the rental
is settled in the ledger and in billing, and borrowing is open again. Public APIs and an emulated cabinet only."""

import asyncio
import uuid
from typing import Any

import pytest
from mesh import Mesh, new_user
from platform_client import wait_for

from device_emulator.cabinet import Cabinet

pytestmark = pytest.mark.e2e


async def test_an_unpaid_fee_is_paid_through_alipay_and_borrowing_opens_again(mesh: Mesh) -> None:
    user = await new_user(mesh, balance_fen=100)  # the least a borrow needs; one started period costs 150
    cabinets = [c for c in await user.cabinets() if c["online"]]
    source = max(cabinets, key=lambda c: c["banks_available"])
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    await asyncio.sleep(1.1)  # durations count whole seconds; a 0-second rental is free
    target = max((c for c in cabinets if c["id"] != source["id"]), key=lambda c: c["free_slots"])
    cabinet: Cabinet = mesh.fleet[target["id"]]
    ack = await cabinet.wait_ack(await cabinet.return_bank(rental["bank_id"]), timeout_s=5)
    assert ack is not None and ack.result == "ok"

    async def unpaid() -> dict[str, Any] | None:
        current = await user.rental(rental["rental_id"])
        return current if current["state"] == "unpaid" else None

    owed_rental, _ = await wait_for(unpaid, timeout_s=30)
    assert owed_rental["fee_fen"] == 150
    refused = await user.borrow(source["id"])
    assert refused.status == 402
    assert refused.json()["code"] == "unpaid_debt"
    debts = (await user.call("GET", f"{user.urls.asset}/v1/wallet/debts")).json()
    assert debts["total_fen"] == 150
    assert [d["rental_id"] for d in debts["items"]] == [rental["rental_id"]]

    started = await user.call(
        "POST",
        f"{user.urls.asset}/v1/wallet/debts/{rental['rental_id']}/payments",
        json={"channel": "alipay"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert started.status == 201, started.response.text
    payment = started.json()
    assert (payment["amount_fen"], payment["status"]) == (150, "pending")
    params = await user.call("POST", f"{user.urls.asset}/v1/wallet/debt-payments/{payment['payment_id']}/pay")
    assert params.status == 200, params.response.text
    assert params.json()["pay_params"]

    async def settled() -> dict[str, Any] | None:
        current = await user.rental(rental["rental_id"])
        return current if current["state"] == "settled" else None

    paid_rental, _ = await wait_for(settled, timeout_s=30)
    assert paid_rental["paid_fen"] == 150
    done = (await user.call("GET", f"{user.urls.asset}/v1/wallet/debt-payments/{payment['payment_id']}")).json()
    assert done["status"] == "succeeded"
    assert done["settled_charge_id"]
    assert (await user.wallet())["balance_fen"] == 100  # the channel paid the fee; the wallet kept its own
    entries = [(e["kind"], e["amount_fen"]) for e in await user.wallet_entries()]
    assert entries[:2] == [("charge", -150), ("provider_payment", 150)]
    assert (await user.call("GET", f"{user.urls.asset}/v1/wallet/debts")).json() == {"items": [], "total_fen": 0}

    again = await user.borrow(target["id"])
    assert again.status == 201, again.response.text
    back = mesh.fleet[target["id"]]
    await back.wait_ack(await back.return_bank(again.json()["bank_id"]), timeout_s=5)
