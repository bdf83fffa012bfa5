"""6.1.2 and 6.1.8 across the running mesh: a user tops up by Alipay and by bank card (both channels' sandboxes),
then closes the account with ¥43.50 in the wallet; asset-credit pays it all back to the channels it came in by
(newest first), and finance still sees it after the account is gone."""

import os
from typing import Any

import pytest
from mesh import Mesh, new_user
from platform_client import wait_for

pytestmark = pytest.mark.e2e


async def test_the_balance_goes_back_to_its_channels_when_the_user_deregisters(mesh: Mesh) -> None:
    user = await new_user(mesh, balance_fen=0)
    for amount, channel in ((2000, "alipay"), (2350, "bank_card")):
        top_up = await user.top_up(amount, channel)
        assert top_up.status == 201, top_up.response.text
        top_up_id = top_up.json()["top_up_id"]

        async def succeeded(top_up_id: str = top_up_id) -> bool:
            return bool((await user.top_up_status(top_up_id)).json()["status"] == "succeeded")

        await wait_for(succeeded, timeout_s=15)
    wallet = await user.wallet()
    user_id = wallet["user_id"]
    assert wallet["balance_fen"] == 4350
    mine = (await user.call("GET", f"{user.urls.asset}/v1/wallet/movements")).json()["items"]
    assert [(m["kind"], m["channel"], m["amount_fen"]) for m in mine] == [
        ("top_up", "bank_card", 2350),
        ("top_up", "alipay", 2000),
    ]

    gone = await user.call("POST", f"{user.urls.user}/v1/users/me/deregistration", json={"password": "e2e-password-1"})
    assert gone.status == 200, gone.response.text

    admin = await user.admin_login(
        os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
        os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
    )

    async def paid_back() -> dict[str, Any] | None:
        timed = await user.call("GET", f"{user.urls.asset}/v1/admin/users/{user_id}/wallet", token=admin)
        assert timed.status == 200, timed.response.text
        body: dict[str, Any] = timed.json()
        parts = [m for m in body["movements"]["items"] if m["kind"] == "withdrawal"]
        done = body["balance_fen"] == 0 and len(parts) == 2 and all(p["status"] == "succeeded" for p in parts)
        return body if done else None

    seen, _ = await wait_for(paid_back, timeout_s=30)
    parts = sorted((m["channel"], m["amount_fen"]) for m in seen["movements"]["items"] if m["kind"] == "withdrawal")
    assert parts == [("alipay", -2000), ("bank_card", -2350)]
