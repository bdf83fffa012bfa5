"""Integration: real events on the dev broker become messages, read through the HTTP API."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts.events import ChargeFailed, ChargeSettled, EjectFailureReason, RentalEnded, RentalFailed

pytestmark = pytest.mark.integration


def ended(
    user_id: uuid.UUID,
    rental_id: uuid.UUID | None = None,
    *,
    bank: str = "PB-000003",
    cabinet: str = "CAB-0002",
    seconds: int = 3900,
    fee: int = 300,
) -> RentalEnded:
    now = datetime.now(UTC)
    return RentalEnded(
        rental_id=rental_id or uuid.uuid4(),
        user_id=user_id,
        bank_id=bank,
        start_cabinet_id="CAB-0001",
        return_cabinet_id=cabinet,
        started_at=now - timedelta(seconds=seconds),
        ended_at=now,
        duration_seconds=seconds,
        fee_fen=fee,
    )


def failed(
    user_id: uuid.UUID,
    rental_id: uuid.UUID | None = None,
    reason: EjectFailureReason = EjectFailureReason.CABINET_OFFLINE,
) -> RentalFailed:
    return RentalFailed(rental_id=rental_id or uuid.uuid4(), user_id=user_id, reason=reason, at=datetime.now(UTC))


async def inbox(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get("/v1/messages", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for_count(client: httpx.AsyncClient, headers: dict[str, str], wait: Any, n: int) -> Any:
    async def check() -> Any:
        body = await inbox(client, headers, limit=100)
        return body if len(body["items"]) >= n else None

    return await wait(check, what=f"{n} messages")


async def test_rental_ended_becomes_one_message_even_when_redelivered(client, bus, auth, wait):
    user = uuid.uuid4()
    data = ended(user)
    envelope = bus.envelope(data, key=str(data.rental_id))
    await bus.send(envelope)
    await bus.send(envelope)  # the same event id again
    # Same key, so same partition: once this one is in, both copies above have been handled.
    await bus.publish(failed(user, data.rental_id), key=str(data.rental_id))

    body = await wait_for_count(client, auth(user), wait, 2)
    titles = [m["title"] for m in body["items"]]
    assert sorted(titles) == ["Borrowing failed", "Rental ended"]
    message = next(m for m in body["items"] if m["title"] == "Rental ended")
    assert message["category"] == "rental"
    assert message["body"] == "You returned power bank PB-000003 at CAB-0002 after 1 h 5 min. Fee: ¥3.00."
    assert message["read_at"] is None
    assert set(message) == {"message_id", "category", "title", "body", "created_at", "read_at", "images"}
    assert message["images"] == []
    assert body["next_before"] is None


async def test_rental_failed_and_payments(client, bus, auth, wait):
    user = uuid.uuid4()
    rental = uuid.uuid4()
    await bus.publish(failed(user, rental, EjectFailureReason.BANK_BATTERY_LOW), key=str(rental))
    ids = {"charge_id": uuid.uuid4(), "rental_id": rental, "user_id": user}
    await bus.publish(
        ChargeSettled(**ids, amount_fen=300, balance_fen=1700, settled_at=datetime.now(UTC)), key=str(user)
    )
    await bus.publish(ChargeFailed(**ids, amount_fen=450, reason="insufficient_balance"), key=str(user))

    body = await wait_for_count(client, auth(user), wait, 3)
    by_title = {m["title"]: m for m in body["items"]}
    assert set(by_title) == {"Borrowing failed", "Payment confirmed", "Payment failed"}
    assert by_title["Borrowing failed"]["category"] == "rental"
    assert "battery is too low" in by_title["Borrowing failed"]["body"]
    assert by_title["Borrowing failed"]["body"].endswith("You have not been charged.")
    assert by_title["Payment confirmed"]["category"] == "payment"
    assert "¥3.00" in by_title["Payment confirmed"]["body"]
    assert "¥17.00" in by_title["Payment confirmed"]["body"]
    assert "please pay manually in the app" in by_title["Payment failed"]["body"]
    assert "¥4.50" in by_title["Payment failed"]["body"]


async def test_users_see_and_mark_only_their_own_messages(client, bus, auth, wait):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await bus.publish(ended(alice, fee=100), key=str(alice))
    await bus.publish(ended(bob, fee=200), key=str(bob))
    alice_items = (await wait_for_count(client, auth(alice), wait, 1))["items"]
    bob_items = (await wait_for_count(client, auth(bob), wait, 1))["items"]
    assert len(alice_items) == 1
    assert len(bob_items) == 1
    assert alice_items[0]["body"].endswith("Fee: ¥1.00.")
    assert bob_items[0]["body"].endswith("Fee: ¥2.00.")

    bob_message = bob_items[0]["message_id"]
    response = await client.post(f"/v1/messages/{bob_message}/read", headers=auth(alice))
    assert response.status_code == 404
    assert response.json()["code"] == "message_not_found"
    assert response.headers["content-type"].startswith("application/problem+json")
    response = await client.post(f"/v1/messages/{uuid.uuid4()}/read", headers=auth(alice))
    assert response.status_code == 404
    assert response.json()["code"] == "message_not_found"
    # Bob's message is still unread.
    assert (await inbox(client, auth(bob), unread_only="true"))["items"][0]["message_id"] == bob_message

    response = await client.post(f"/v1/messages/{bob_message}/read", headers=auth(bob))
    assert response.status_code == 200
    first_read = response.json()["read_at"]
    assert first_read is not None
    again = await client.post(f"/v1/messages/{bob_message}/read", headers=auth(bob))
    assert again.status_code == 200
    assert again.json()["read_at"] == first_read  # reading twice keeps the first time
    assert (await inbox(client, auth(bob), unread_only="true"))["items"] == []
    assert len((await inbox(client, auth(bob)))["items"]) == 1


async def test_newest_first_with_cursor_pages(client, bus, auth, wait):
    user = uuid.uuid4()
    for fee in range(1, 6):  # same key: handled in this order
        await bus.publish(ended(user, fee=fee), key=str(user))
    await wait_for_count(client, auth(user), wait, 5)

    fees, before, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"before": before} if before else {})
        page = await inbox(client, auth(user), **params)
        pages += 1
        fees += [m["body"].rsplit("¥", 1)[1] for m in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert pages == 3
    assert fees == ["0.05.", "0.04.", "0.03.", "0.02.", "0.01."]

    first = (await inbox(client, auth(user), limit=1))["items"][0]
    await client.post(f"/v1/messages/{first['message_id']}/read", headers=auth(user))
    unread = (await inbox(client, auth(user), unread_only="true"))["items"]
    assert len(unread) == 4
    assert first["message_id"] not in {m["message_id"] for m in unread}


async def test_bad_requests(client, auth, signer):
    user = uuid.uuid4()
    assert (await client.get("/v1/messages")).status_code == 401
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}):
        response = await client.get("/v1/messages", headers=auth(user), params=params)
        assert response.status_code == 422
    response = await client.get("/v1/messages", headers=auth(user), params={"before": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"
    response = await client.post("/v1/messages/not-a-uuid/read", headers=auth(user))
    assert response.status_code == 422
    admin = signer.issue("ops-1", kind="admin", roles=["super_admin"])
    response = await client.get("/v1/messages", headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 403


async def test_only_a_revived_rental_start_and_a_refund_make_messages(client, bus, auth, wait):
    from contracts.events import PriceSnapshot, RefundSettled, RentalStarted

    user = uuid.uuid4()
    price = PriceSnapshot(period_minutes=30, price_per_period_fen=150, free_minutes=0, daily_cap_fen=2000)
    now = datetime.now(UTC)

    def started(after_failure: bool) -> RentalStarted:
        return RentalStarted(
            rental_id=uuid.uuid4(),
            user_id=user,
            bank_id="PB-000004",
            cabinet_id="CAB-0001",
            slot=2,
            started_at=now,
            price=price,
            after_failure=after_failure,
        )

    normal, revived = started(False), started(True)
    await bus.publish(normal, key=str(normal.rental_id))
    await bus.publish(revived, key=str(revived.rental_id))
    refund = RefundSettled(
        refund_id=uuid.uuid4(),
        rental_id=revived.rental_id,
        user_id=user,
        amount_fen=150,
        balance_fen=4850,
        settled_at=now,
    )
    await bus.publish(refund, key=str(user))

    body = await wait_for_count(client, auth(user), wait, 2)
    assert sorted(m["title"] for m in body["items"]) == ["Refund received", "The power bank came out after all"]
    # Same key as the normal start, so same partition: once this message is in, the normal start was handled.
    await bus.publish(failed(user, normal.rental_id), key=str(normal.rental_id))
    body = await wait_for_count(client, auth(user), wait, 3)
    assert sorted(m["title"] for m in body["items"]) == [
        "Borrowing failed",
        "Refund received",
        "The power bank came out after all",
    ]


async def test_unread_count_read_all_delete_and_category_filter(client, bus, auth, staff, wait):
    user, other = uuid.uuid4(), uuid.uuid4()
    await bus.publish(ended(user, fee=100), key=str(user))
    await bus.publish(failed(user), key=str(user))
    await bus.publish(ended(other, fee=100), key=str(other))
    ids = {"charge_id": uuid.uuid4(), "rental_id": uuid.uuid4(), "user_id": user}
    await bus.publish(
        ChargeSettled(**ids, amount_fen=100, balance_fen=900, settled_at=datetime.now(UTC)), key=str(user)
    )
    await wait_for_count(client, auth(user), wait, 3)
    await wait_for_count(client, auth(other), wait, 1)

    counts = (await client.get("/v1/messages/unread-count", headers=auth(user))).json()
    assert counts["unread"] == 3
    assert counts["by_category"] == {
        "rental": 2,
        "payment": 1,
        "system": 0,
        "operations": 0,
        "service": 0,
        "marketing": 0,
    }
    rentals = await inbox(client, auth(user), category="rental")
    assert {m["category"] for m in rentals["items"]} == {"rental"} and len(rentals["items"]) == 2

    response = await client.post("/v1/messages/read-all", headers=auth(user), params={"category": "payment"})
    assert response.json() == {"marked": 1}
    assert (await client.get("/v1/messages/unread-count", headers=auth(user))).json()["unread"] == 2
    assert (await client.post("/v1/messages/read-all", headers=auth(user))).json() == {"marked": 2}
    assert (await client.post("/v1/messages/read-all", headers=auth(user))).json() == {"marked": 0}
    assert (await client.get("/v1/messages/unread-count", headers=auth(user))).json()["unread"] == 0
    # The other user's message is untouched.
    assert (await client.get("/v1/messages/unread-count", headers=auth(other))).json()["unread"] == 1

    victim = (await inbox(client, auth(other)))["items"][0]["message_id"]
    response = await client.delete(f"/v1/messages/{victim}", headers=auth(user))
    assert response.status_code == 404
    assert response.json()["code"] == "message_not_found"
    mine = (await inbox(client, auth(user), category="payment"))["items"][0]["message_id"]
    assert (await client.delete(f"/v1/messages/{mine}", headers=auth(user))).status_code == 204
    assert (await client.delete(f"/v1/messages/{mine}", headers=auth(user))).status_code == 404
    assert len((await inbox(client, auth(user)))["items"]) == 2
    assert len((await inbox(client, auth(other)))["items"]) == 1

    for params in ({"category": "spam"},):
        assert (await client.get("/v1/messages", headers=auth(user), params=params)).status_code == 422
        assert (await client.post("/v1/messages/read-all", headers=auth(user), params=params)).status_code == 422
    assert (await client.get("/v1/messages/unread-count")).status_code == 401
    assert (await client.get("/v1/messages/unread-count", headers=staff())).status_code == 403


async def test_support_reads_a_users_inbox_and_a_user_or_an_analyst_cannot(client, bus, auth, staff, wait):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await bus.publish(ended(alice, fee=100), key=str(alice))
    await bus.publish(ended(bob, fee=200), key=str(bob))
    mine = (await wait_for_count(client, auth(alice), wait, 1))["items"]
    await wait_for_count(client, auth(bob), wait, 1)
    await client.post(f"/v1/messages/{mine[0]['message_id']}/read", headers=auth(alice))

    seen = await client.get(f"/v1/admin/users/{alice}/messages", headers=staff())
    assert seen.status_code == 200, seen.text
    assert seen.json()["items"] == (await inbox(client, auth(alice)))["items"]  # as alice sees it, read time too
    assert seen.json()["items"][0]["read_at"] is not None
    refused = await client.get(f"/v1/admin/users/{alice}/messages", headers=auth(bob))
    assert refused.status_code == 403, refused.text
    analyst = await client.get(f"/v1/admin/users/{alice}/messages", headers=staff(roles=("analyst",)))
    assert analyst.status_code == 403, analyst.text
