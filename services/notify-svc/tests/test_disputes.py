"""A dispute of a rental (billing-svc holds it and alone resolves it) is a ticket of kind `dispute` in
the same staff queue, linked to the rental, and resolved when billing settles it."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.events import DisputeOpened, DisputeResolved

pytestmark = pytest.mark.integration


async def test_a_dispute_is_queued_as_a_ticket_and_resolved_by_billing(client, auth, staff, bus, wait, recorder):
    user, rental, dispute = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    opened = DisputeOpened(
        dispute_id=dispute, rental_id=rental, user_id=user, reason="I returned it at 10:05", at=datetime.now(UTC)
    )
    envelope = await bus.publish(opened, str(rental))
    await bus.send(envelope)  # delivered twice: still one ticket

    async def queued() -> list[Any] | None:
        items: list[Any] = (await client.get("/v1/admin/tickets?kind=dispute", headers=staff())).json()["items"]
        return items or None

    tickets = await wait(queued, what="the dispute in the staff queue")
    assert len(tickets) == 1
    ticket = tickets[0]
    assert (ticket["kind"], ticket["rental_id"], ticket["priority"], ticket["status"]) == (
        "dispute",
        str(rental),
        "high",
        "new",
    )
    mine = (await client.get("/v1/tickets", headers=auth(user))).json()["items"]
    assert [t["ticket_id"] for t in mine] == [ticket["ticket_id"]]

    resolved = DisputeResolved(
        dispute_id=dispute,
        rental_id=rental,
        user_id=user,
        outcome="corrected",
        note="Fee lowered to 1.50",
        by="agent-7",
        at=datetime.now(UTC),
    )
    await bus.publish(resolved, str(rental))

    async def settled() -> dict[str, Any] | None:
        one: dict[str, Any] = (await client.get(f"/v1/tickets/{ticket['ticket_id']}", headers=auth(user))).json()
        return one if one["status"] == "resolved" else None

    one = await wait(settled, what="the dispute ticket resolved")
    assert any("Fee lowered to 1.50" in e["body"] for e in one["entries"]), one["entries"]

    # Users cannot open a dispute ticket themselves: disputes start at billing.
    refused = await client.post("/v1/tickets", headers=auth(user), json={"kind": "dispute", "text": "x"})
    assert (refused.status_code, refused.json()["code"]) == (422, "validation_error")
