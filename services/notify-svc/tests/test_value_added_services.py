"""Value-added services with versioned risk notices: a user accepts the version they read (an outdated
one is refused), a new version makes earlier consent no longer current, withdrawal is a record too, and
the records are append-only evidence staff can read."""

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.events import VasConsentRecorded

pytestmark = pytest.mark.integration

ADMIN = "/v1/admin/value-added-services"
USER = "/v1/value-added-services"


async def test_consent_to_the_current_risk_notice_version(client, auth, staff, settings, recorder):
    operator = staff(roles=("operator",))
    user = uuid.uuid4()
    created = await client.post(
        ADMIN,
        headers=operator,
        json={
            "code": "damage_cover",
            "name": "Damage cover",
            "description": "No charge if the bank breaks",
            "kind": "add_on",
            "provider": "PICC Property and Casualty",
            "price_fen": 100,
        },
    )
    assert created.status_code == 201, created.text
    again = await client.post(
        ADMIN,
        headers=operator,
        json={"code": "damage_cover", "name": "x", "description": "y", "kind": "add_on", "provider": "z"},
    )
    assert (again.status_code, again.json()["code"]) == (409, "service_exists")

    async def offer() -> dict[str, Any]:
        items = (await client.get(USER, headers=auth(user))).json()["items"]
        found: dict[str, Any] = next(s for s in items if s["code"] == "damage_cover")
        return found

    assert (await offer())["risk_notice"] is None
    assert ((await offer())["provider"], (await offer())["price_fen"]) == ("PICC Property and Casualty", 100)
    early = await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 1})
    assert (early.status_code, early.json()["code"]) == (409, "no_risk_notice")

    v1 = await client.post(
        f"{ADMIN}/damage_cover/risk-notices", headers=operator, json={"text": "Cover ends at 30 days."}
    )
    assert v1.json()["version"] == 1
    accepted = await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 1})
    assert (accepted.status_code, accepted.json()["action"]) == (201, "accepted")
    # The acceptance is an event with the exact notice version and the price: the money path charges from it.
    event = await recorder.wait_for(
        lambda e: isinstance(e.data, VasConsentRecorded) and e.data.user_id == user and e.data.action == "accepted"
    )
    assert isinstance(event.data, VasConsentRecorded)
    assert (event.data.service_code, event.data.notice_version, event.data.price_fen) == ("damage_cover", 1, 100)
    assert event.data.provider == "PICC Property and Casualty"
    assert ((await offer())["consented_version"], (await offer())["consent_current"]) == (1, True)

    v2 = await client.post(
        f"{ADMIN}/damage_cover/risk-notices", headers=operator, json={"text": "Cover ends at 14 days."}
    )
    assert v2.json()["version"] == 2
    current = await offer()
    assert (current["risk_notice"]["version"], current["consented_version"], current["consent_current"]) == (
        2,
        1,
        False,
    )
    stale = await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 1})
    assert (stale.status_code, stale.json()["code"], stale.json()["current_version"]) == (
        409,
        "risk_notice_outdated",
        2,
    )
    assert (
        await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 2})
    ).status_code == 201
    assert (await client.post(f"{USER}/damage_cover/withdraw", headers=auth(user))).json()["action"] == "withdrawn"
    twice = await client.post(f"{USER}/damage_cover/withdraw", headers=auth(user))
    assert (twice.status_code, twice.json()["code"]) == (409, "not_consented")
    assert (await offer())["consented_version"] is None

    mine = (await client.get(f"{USER}/consents", headers=auth(user))).json()["items"]
    assert [(r["action"], r["version"]) for r in mine] == [("withdrawn", 2), ("accepted", 2), ("accepted", 1)]
    audit = (await client.get(f"{ADMIN}/damage_cover/consents", headers=operator)).json()["items"]
    assert [r["user_id"] for r in audit] == [str(user)] * 3
    other = (await client.get(f"{USER}/consents", headers=auth(uuid.uuid4()))).json()["items"]
    assert other == []

    assert (await client.get(f"{ADMIN}/damage_cover/consents", headers=staff(roles=("support",)))).status_code == 403
    bad = await client.post(f"{USER}/Not-A-Code/consents", headers=auth(user), json={"version": 1})
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_error")
    missing = await client.post(f"{USER}/no_such_service/consents", headers=auth(user), json={"version": 1})
    assert (missing.status_code, missing.json()["code"]) == (404, "service_not_found")

    engine = create_async_engine(settings.database_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE consent_records SET version = 9"))
    finally:
        await engine.dispose()


async def test_the_catalogue_rules(client, auth, staff):
    """Kind, provider and price are checked; a retired service cannot be taken or given a new notice, but who
    took it still sees it and can withdraw; staff list the whole catalogue; users cannot manage it."""
    operator, user = staff(roles=("operator",)), uuid.uuid4()
    offer = {"code": "night_return", "name": "Night return", "description": "Return by 9 am", "provider": "us"}
    for bad in (
        {**offer},  # no kind
        {**offer, "kind": "lottery"},
        {**offer, "kind": "partner_offer", "provider": " "},
        {**offer, "kind": "partner_offer", "price_fen": 0},
        {**offer, "kind": "partner_offer", "price_fen": -5},
        {**offer, "kind": "partner_offer", "price_fen": "1.5"},
    ):
        refused = await client.post(ADMIN, headers=operator, json=bad)
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_error"), bad
    assert (await client.post(ADMIN, headers=auth(user), json={**offer, "kind": "add_on"})).status_code == 403
    created = await client.post(ADMIN, headers=operator, json={**offer, "kind": "partner_offer"})
    assert (created.status_code, created.json()["price_fen"], created.json()["kind"]) == (201, None, "partner_offer")
    await client.post(f"{ADMIN}/night_return/risk-notices", headers=operator, json={"text": "Late fees apply."})
    taken = await client.post(f"{USER}/night_return/consents", headers=auth(user), json={"version": 1})
    assert taken.status_code == 201

    retired = await client.post(f"{ADMIN}/night_return/retire", headers=operator)
    assert retired.status_code == 200 and retired.json()["retired_at"] is not None
    other = uuid.uuid4()
    late = await client.post(f"{USER}/night_return/consents", headers=auth(other), json={"version": 1})
    assert (late.status_code, late.json()["code"]) == (409, "service_retired")
    notice = await client.post(f"{ADMIN}/night_return/risk-notices", headers=operator, json={"text": "v2"})
    assert (notice.status_code, notice.json()["code"]) == (409, "service_retired")
    assert [s["code"] for s in (await client.get(USER, headers=auth(other))).json()["items"]] == []
    assert [s["code"] for s in (await client.get(USER, headers=auth(user))).json()["items"]] == ["night_return"]
    assert (await client.post(f"{USER}/night_return/withdraw", headers=auth(user))).status_code == 201
    assert [s["code"] for s in (await client.get(USER, headers=auth(user))).json()["items"]] == []
    listed = (await client.get(ADMIN, headers=operator)).json()["items"]
    assert [(s["code"], s["retired_at"] is not None) for s in listed] == [("night_return", True)]
    assert (await client.get(ADMIN, headers=staff(roles=("support",)))).status_code == 403
    missing = await client.post(f"{ADMIN}/no_such_thing/retire", headers=operator)
    assert (missing.status_code, missing.json()["code"]) == (404, "service_not_found")


async def test_a_priced_service_is_paid_or_withdrawn_by_the_money_path(client, auth, staff, bus, recorder, wait):
    """asset-credit's answer to an acceptance: `paid` on the offer and a message; a failed payment withdraws the
    acceptance for the user (reason `payment_failed`, an event) and says so, once however often it comes."""
    from contracts.events import VasFeeFailed, VasFeeSettled

    operator = staff(roles=("operator",))
    code = f"cover_{uuid.uuid4().hex[:8]}"
    body = {"code": code, "name": "Cable cover", "description": "d", "kind": "add_on", "provider": "PICC"}
    assert (await client.post(ADMIN, headers=operator, json={**body, "price_fen": 300})).status_code == 201
    await client.post(f"{ADMIN}/{code}/risk-notices", headers=operator, json={"text": "30 days."})

    async def offer(user: uuid.UUID) -> dict[str, Any]:
        items = (await client.get(USER, headers=auth(user))).json()["items"]
        found: dict[str, Any] = next(s for s in items if s["code"] == code)
        return found

    known: set[int] = set()

    async def accepted_by(user: uuid.UUID) -> VasConsentRecorded:
        assert (
            await client.post(f"{USER}/{code}/consents", headers=auth(user), json={"version": 1})
        ).status_code == 201
        event = await recorder.wait_for(
            lambda e: (
                isinstance(e.data, VasConsentRecorded)
                and e.data.user_id == user
                and e.data.action == "accepted"
                and e.data.consent_id not in known
            )
        )
        assert isinstance(event.data, VasConsentRecorded)
        known.add(event.data.consent_id)
        return event.data

    payer, short = uuid.uuid4(), uuid.uuid4()
    paid = await accepted_by(payer)
    assert (await offer(payer))["payment"] == "pending"
    settled = VasFeeSettled(
        consent_id=paid.consent_id,
        user_id=payer,
        service_code=code,
        amount_fen=300,
        balance_fen=700,
        settled_at=paid.at,
    )
    envelope = await bus.publish(settled, key=str(payer))
    await bus.send(envelope)  # redelivered

    async def is_paid() -> bool:
        return (await offer(payer))["payment"] == "paid"

    await wait(is_paid, what="the offer to show the payment")
    assert (await offer(payer))["consent_current"] is True

    unpaid = await accepted_by(short)
    failed = VasFeeFailed(
        consent_id=unpaid.consent_id,
        user_id=short,
        service_code=code,
        amount_fen=300,
        reason="insufficient_balance",
        at=unpaid.at,
    )
    envelope = await bus.publish(failed, key=str(short))
    await bus.send(envelope)
    withdrawn = await recorder.wait_for(
        lambda e: isinstance(e.data, VasConsentRecorded) and e.data.user_id == short and e.data.action == "withdrawn"
    )
    assert isinstance(withdrawn.data, VasConsentRecorded)
    assert withdrawn.data.reason == "payment_failed"
    current = await offer(short)
    assert (current["consented_version"], current["consent_current"], current["payment"]) == (None, False, None)
    records = (await client.get(f"{USER}/consents", headers=auth(short))).json()["items"]
    assert [(r["action"], r["reason"], r["payment"]) for r in records] == [
        ("withdrawn", "payment_failed", None),
        ("accepted", None, "failed"),
    ]

    async def messages(user: uuid.UUID) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get("/v1/messages", headers=auth(user))).json()["items"]
        return items

    async def one_each() -> bool:
        return len(await messages(payer)) == 1 and len(await messages(short)) == 1

    await wait(one_each, what="one message per answer")
    assert (await messages(payer))[0]["title"] == "Payment confirmed"
    assert (await messages(short))[0]["title"] == "Payment failed"
    # The user accepts again and that one is paid: once it shows, every earlier copy on this user's partition was
    # handled, and there is still one withdrawal and one failure message.
    again = await accepted_by(short)
    await bus.publish(settled.model_copy(update={"consent_id": again.consent_id, "user_id": short}), key=str(short))

    async def repaid() -> bool:
        return (await offer(short))["payment"] == "paid"

    await wait(repaid, what="the second acceptance to be paid")
    records = (await client.get(f"{USER}/consents", headers=auth(short))).json()["items"]
    assert [(r["action"], r["payment"]) for r in records] == [
        ("accepted", "paid"),
        ("withdrawn", None),
        ("accepted", "failed"),
    ]
    assert [m["title"] for m in await messages(short)] == ["Payment confirmed", "Payment failed"]

    # Finance refunds the payer's fee (asset.vas_fee.refunded): one message, however often the event comes.
    from contracts.events import VasFeeRefunded

    refund = VasFeeRefunded(
        consent_id=paid.consent_id,
        user_id=payer,
        service_code=code,
        amount_fen=300,
        balance_fen=1000,
        reason="not delivered",
        refunded_at=paid.at,
    )
    envelope = await bus.publish(refund, key=str(payer))
    await bus.send(envelope)

    async def refunded() -> bool:
        return len(await messages(payer)) == 2

    await wait(refunded, what="the refund message")
    titles = [(m["title"], m["body"]) for m in await messages(payer)]
    assert titles[0] == ("Refund received", "We refunded ¥3.00 for Cable cover to your balance. Balance: ¥10.00.")
    assert [t for t, _ in titles] == ["Refund received", "Payment confirmed"]
    # ... and the payment reads `refunded`, with the refund, in the user's and the staff's views.
    assert (await offer(payer))["payment"] == "refunded"
    mine = (await client.get(f"{USER}/consents", headers=auth(payer))).json()["items"]
    assert [(r["action"], r["payment"]) for r in mine] == [("accepted", "refunded")]
    assert mine[0]["refund"]["amount_fen"] == 300 and mine[0]["refund"]["reason"] == "not delivered"
    seen = (await client.get(f"{ADMIN}/{code}/consents", headers=operator)).json()["items"]
    by_user = {(r["user_id"], r["action"], r["payment"]) for r in seen}
    assert (str(payer), "accepted", "refunded") in by_user
    assert (str(short), "accepted", "failed") in by_user and (str(short), "accepted", "paid") in by_user
    # A refund of a failed payment is no move from its state: nothing changes.
    await bus.publish(refund.model_copy(update={"consent_id": unpaid.consent_id, "user_id": short}), key=str(short))

    async def three_for_short() -> bool:
        return len(await messages(short)) == 3

    await wait(three_for_short, what="the refund message of the failed payment's user")
    records = (await client.get(f"{USER}/consents", headers=auth(short))).json()["items"]
    assert [(r["action"], r["payment"]) for r in records] == [
        ("accepted", "paid"),
        ("withdrawn", None),
        ("accepted", "failed"),
    ]
