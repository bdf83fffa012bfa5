"""The console's support pages over plain HTTP: a user's view for support, a dispute resolved by a
confirmed correction; checked against the services' APIs."""

import re
from collections.abc import Callable
from typing import Any

import pytest
from console_http import (
    ADMIN,
    Browserless,
    settled_rental,
    staff_member,
    text,
    yuan,
)
from mesh import Mesh
from platform_client import PlatformClient, wait_for

pytestmark = pytest.mark.e2e


async def test_support_sees_a_users_rentals_credit_and_tickets_but_not_the_ledger(
    mesh: Mesh, user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    me = (await user.call("GET", f"{user.urls.user}/v1/users/me")).json()
    rental = await settled_rental(mesh, user)
    reported = await user.report("app_problem", "the map shows no cabinets near me")
    assert reported.status == 201, reported.response.text

    agent = console()
    assert (await agent.sign_in(*await staff_member(mesh, "support"))).headers["location"] == "/"
    page = await agent.page(f"/users/{me['user_id']}")
    row = re.search(rf'<tr data-rental="{rental["rental_id"]}">(.*?)</tr>', page, re.S)
    assert row and yuan(rental["fee_fen"]) in row.group(1) and rental["cabinet_id"] in row.group(1)
    assert f'href="/tickets/{reported.json()["ticket_id"]}"' in page
    assert 'data-section="credit"' in page
    assert 'data-section="wallet"' not in page  # ledger:read is finance's, and asset-credit would refuse it

    async def inbox_shown() -> list[dict[str, Any]] | None:
        """The user's inbox as the user reads it (the rental's end at least), all on support's page."""
        inbox = await user.messages()
        shown = await agent.page(f"/users/{me['user_id']}")
        return inbox if inbox and all(f'data-message="{m["message_id"]}"' in shown for m in inbox) else None

    inbox, _ = await wait_for(inbox_shown, timeout_s=15, interval_s=0.3)
    assert any("PB-" in m["body"] or "¥" in m["body"] for m in inbox)  # the rental's message is there
    assert me["phone"] not in page and text(page, "phone").count("*") >= 4  # masked by user-svc

    revealed = await agent.page(f"/users/{me['user_id']}?reveal=true")
    assert text(revealed, "phone") == me["phone"]
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    trail = await api.call(
        "GET", f"{api.urls.user}/v1/admin/audit-log", token=token, params={"target_id": me["user_id"]}
    )
    assert "user.pii_reveal" in [row["action"] for row in trail.json()]

    # An administrator with ledger:read also sees the wallet, as asset-credit reports it.
    admin = console()
    await admin.sign_in(*ADMIN)
    page = await admin.page(f"/users/{me['user_id']}")
    wallet = await user.wallet()
    assert text(page, "balance") == yuan(wallet["balance_fen"])
    assert '<tr data-movement="top_up">' in page


async def test_a_dispute_is_resolved_by_a_confirmed_correction_that_refunds_once(
    mesh: Mesh, user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    rental = await settled_rental(mesh, user)
    assert rental["fee_fen"] > 50, rental
    disputed = await user.call(
        "POST", f"{user.urls.billing}/v1/rentals/{rental['rental_id']}/disputes", json={"reason": "returned at once"}
    )
    assert disputed.status == 201, disputed.response.text
    balance_before = (await user.wallet())["balance_fen"]

    agent = console()
    await agent.sign_in(*await staff_member(mesh, "support"))
    queue = await agent.page("/disputes")
    assert f'data-dispute="{disputed.json()["dispute_id"]}"' in queue
    page = await agent.page(f"/rentals/{rental['rental_id']}")
    assert 'data-section="dispute"' in page and "returned at once" in page
    dispute_id = re.search(r'name="dispute_id" value="([^"]+)"', page)
    assert dispute_id and dispute_id.group(1) == disputed.json()["dispute_id"]

    form = {"fee": "0.5", "note": "cabinet log: returned within a minute (e2e)", "dispute_id": dispute_id.group(1)}
    review = await agent.post(f"/rentals/{rental['rental_id']}/correction", form)
    assert review.status_code == 200, review.text
    assert text(review.text, "fee-change") == f"{yuan(rental['fee_fen'])} → ¥0.50"
    assert text(review.text, "refund") == yuan(rental["paid_fen"] - 50)
    assert (await user.rental(rental["rental_id"]))["fee_fen"] == rental["fee_fen"]  # nothing sent before confirming

    key = re.search(r'name="correction_key" value="([^"]+)"', review.text)
    assert key
    for _ in range(2):  # a confirmation sent twice corrects once
        confirmed = await agent.post(
            f"/rentals/{rental['rental_id']}/correction/confirm", {**form, "correction_key": key.group(1)}
        )
        assert confirmed.status_code == 303, confirmed.text
    page = await agent.page(f"/rentals/{rental['rental_id']}")
    assert text(page, "fee") == "¥0.50" and page.count("data-correction=") == 1
    assert 'data-section="dispute"' not in page  # resolved by the correction
    assert f'data-dispute="{dispute_id.group(1)}"' in await agent.page("/disputes?state=resolved")

    async def refunded() -> bool:
        return bool((await user.wallet())["balance_fen"] == balance_before + rental["paid_fen"] - 50)

    await wait_for(refunded, timeout_s=15, interval_s=0.2)
