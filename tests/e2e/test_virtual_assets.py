"""Virtual assets across the running mesh: an administrator issues a coupon, the user borrows and
returns, and the coupon is applied at settlement with exact balances and the rental's breakdown."""

import asyncio
import os
import uuid
from typing import Any

import pytest
from mesh import Mesh
from platform_client import PlatformClient, wait_for

from device_emulator.cabinet import Cabinet

pytestmark = pytest.mark.e2e


async def test_an_issued_coupon_discounts_the_rental_fee(mesh: Mesh, user: PlatformClient) -> None:
    wallet = await user.wallet()
    user_id, start_balance = wallet["user_id"], wallet["balance_fen"]
    admin = await user.admin_login(
        os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
        os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
    )
    created = await user.call(
        "POST",
        f"{user.urls.asset}/v1/admin/asset-templates",
        token=admin,
        json={"kind": "coupon", "name": "¥1 off", "amount_off_fen": 100, "valid_days": 7},
    )
    assert created.status == 201, created.response.text
    template_id = created.json()["template_id"]
    issued = await user.call(
        "POST",
        f"{user.urls.asset}/v1/admin/asset-templates/{template_id}/issues",
        token=admin,
        json={"user_ids": [user_id]},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert issued.status == 201, issued.response.text
    mine = (await user.call("GET", f"{user.urls.asset}/v1/assets")).json()
    assert [(a["kind"], a["status"]) for a in mine["items"]] == [("coupon", "available")]

    cabinets = [c for c in await user.cabinets() if c["online"]]
    source = max(cabinets, key=lambda c: c["banks_available"])
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    await asyncio.sleep(1.1)  # durations count whole seconds; a 0-second rental is free
    target = max((c for c in cabinets if c["id"] != source["id"]), key=lambda c: c["free_slots"])
    cabinet: Cabinet = mesh.fleet[target["id"]]
    msg_id = await cabinet.return_bank(rental["bank_id"])
    assert await cabinet.wait_ack(msg_id, timeout_s=5) is not None

    async def settled() -> dict[str, Any] | None:
        found = await user.rental(rental["rental_id"])
        return found if found["state"] == "settled" else None

    done, _ = await wait_for(settled, timeout_s=30)
    assert done["fee_fen"] == 150  # one started 30-minute period at the default price
    assert (done["coupon_fen"], done["discount_fen"], done["paid_fen"]) == (100, 100, 50)
    assert (await user.wallet())["balance_fen"] == start_balance - 50
    charges = [e["amount_fen"] for e in await user.wallet_entries() if e["kind"] == "charge"]
    assert charges == [-50]
    history = (await user.call("GET", f"{user.urls.billing}/v1/rentals")).json()["items"]
    assert [(r["rental_id"], r["paid_fen"]) for r in history] == [(rental["rental_id"], 50)]

    after = (await user.call("GET", f"{user.urls.asset}/v1/assets")).json()
    assert [(a["status"], a["used_rental_id"]) for a in after["items"]] == [("used", rental["rental_id"])]
    applied = [h for h in after["history"] if h["action"] == "applied"]
    assert [(h["amount_fen"], h["rental_id"]) for h in applied] == [(100, rental["rental_id"])]

    async def payment_message() -> list[dict[str, Any]] | None:
        items = [m for m in await user.messages() if m["title"] == "Payment confirmed"]
        return items or None

    messages, _ = await wait_for(payment_message, timeout_s=10)
    assert "discount ¥1.00 (coupon ¥1.00)" in messages[0]["body"]
    assert "¥0.50 from your balance" in messages[0]["body"]
