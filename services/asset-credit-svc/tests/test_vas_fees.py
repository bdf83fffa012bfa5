"""Integration: a priced value-added service is charged from notify.vas_consent.recorded, once per consent, from
the balance only; a short balance fails without debiting, and stays failed (real PG + broker)."""

import random
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from contracts import Topic, new_event
from contracts.events import VasConsentRecorded

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def kafka_svc(service_factory):
    async with service_factory() as service:
        await service.wait_consumers_ready()
        yield service


def consent(user_id: uuid.UUID, price_fen: int | None, action: str = "accepted") -> VasConsentRecorded:
    return VasConsentRecorded(
        consent_id=random.randint(1, 2**53),
        user_id=user_id,
        service_code="damage_cover",
        provider="PICC",
        action=action,  # type: ignore[arg-type]
        notice_version=1,
        price_fen=price_fen,
        at=datetime.now(UTC),
    )


async def produce(producer, data: VasConsentRecorded) -> None:
    envelope = new_event(data, key=str(data.user_id), producer="notify-svc-test")
    await producer.send_and_wait(Topic.VAS_CONSENTS.value, envelope.to_bytes(), key=envelope.key.encode())


async def test_a_priced_service_is_charged_once_per_consent(kafka_svc, producer, payments_topic) -> None:
    svc = kafka_svc
    user = await svc.funded_user(1000)
    accepted = consent(user, 300)
    for _ in range(3):  # redelivered, and sent again in a new envelope
        await produce(producer, accepted)
    settled = await payments_topic.wait_for(
        lambda e: e.type == "asset.vas_fee.settled" and e.data.consent_id == accepted.consent_id
    )
    assert settled.key == str(user)
    assert (settled.data.amount_fen, settled.data.balance_fen, settled.data.service_code) == (300, 700, "damage_cover")

    # A withdrawal and a free service cost nothing; a marker shows every copy above was handled by then.
    await produce(producer, consent(user, 300, action="withdrawn"))
    await produce(producer, consent(user, None))
    marker = consent(user, 1)
    await produce(producer, marker)
    await payments_topic.wait_for(lambda e: getattr(e.data, "consent_id", None) == marker.consent_id)
    assert await svc.balance(user) == 699
    assert [e.type for e in payments_topic.seen if getattr(e.data, "consent_id", None) == accepted.consent_id] == [
        "asset.vas_fee.settled"
    ]
    entries = (await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))).json()["items"]
    assert [(e["kind"], e["amount_fen"], e["reference"]) for e in entries[:2]] == [
        ("vas_fee", -1, f"vas:{marker.consent_id}"),
        ("vas_fee", -300, f"vas:{accepted.consent_id}"),
    ]


async def test_a_short_balance_fails_without_debiting_and_stays_failed(kafka_svc, producer, payments_topic) -> None:
    svc = kafka_svc
    user = await svc.funded_user(100)
    accepted = consent(user, 300)
    await produce(producer, accepted)
    failed = await payments_topic.wait_for(
        lambda e: e.type == "asset.vas_fee.failed" and e.data.consent_id == accepted.consent_id
    )
    assert (failed.data.reason, failed.data.amount_fen) == ("insufficient_balance", 300)
    assert await svc.balance(user) == 100

    # Topped up since: the same consent redelivered is not charged after all (notify-svc withdrew it).
    top_up = await svc.top_up(user, 1000)
    assert (await svc.wait_top_up(user, top_up["top_up_id"]))["status"] == "succeeded"
    await produce(producer, accepted)
    marker = consent(user, 1)
    await produce(producer, marker)
    await payments_topic.wait_for(lambda e: getattr(e.data, "consent_id", None) == marker.consent_id)
    assert await svc.balance(user) == 1099
    async with svc.runtime.engine.connect() as conn:
        unbalanced = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT transaction_id FROM postings "
                    "GROUP BY transaction_id HAVING sum(amount_fen) <> 0) t"
                )
            )
        ).scalar_one()
    assert unbalanced == 0


async def test_finance_refunds_a_settled_fee_once(kafka_svc, producer, payments_topic) -> None:
    svc = kafka_svc
    finance = {"Authorization": f"Bearer {svc.signer.issue('fin-vas', kind='admin', roles=['finance'])}"}
    support = {"Authorization": f"Bearer {svc.signer.issue('sup-vas', kind='admin', roles=['support'])}"}
    user = await svc.funded_user(1000)
    accepted, short = consent(user, 300), consent(user, 5000)
    await produce(producer, accepted)
    await produce(producer, short)
    for c in (accepted, short):
        await payments_topic.wait_for(lambda e, c=c: getattr(e.data, "consent_id", None) == c.consent_id)
    assert await svc.balance(user) == 700

    url = f"/v1/admin/vas-charges/{accepted.consent_id}/refund"
    assert (await svc.client.post(url, json={"reason": "x"}, headers=support)).status_code == 403
    assert (await svc.client.post(url, json={"reason": " "}, headers=finance)).status_code == 422
    refunded = await svc.client.post(url, json={"reason": "service not delivered"}, headers=finance)
    assert refunded.status_code == 200, refunded.text
    assert (refunded.json()["status"], refunded.json()["refund_reason"]) == ("refunded", "service not delivered")
    assert await svc.balance(user) == 1000
    again = await svc.client.post(url, json={"reason": "again"}, headers=finance)
    assert (again.status_code, again.json()["code"]) == (409, "vas_charge_not_refundable")
    failed = await svc.client.post(
        f"/v1/admin/vas-charges/{short.consent_id}/refund", json={"reason": "x"}, headers=finance
    )
    assert (failed.status_code, failed.json()["code"]) == (409, "vas_charge_not_refundable")
    missing = await svc.client.post("/v1/admin/vas-charges/1/refund", json={"reason": "x"}, headers=finance)
    assert (missing.status_code, missing.json()["code"]) == (404, "vas_charge_not_found")

    event = await payments_topic.wait_for(
        lambda e: e.type == "asset.vas_fee.refunded" and e.data.consent_id == accepted.consent_id
    )
    assert (event.data.amount_fen, event.data.balance_fen, event.data.reason) == (300, 1000, "service not delivered")
    listed = (await svc.client.get(f"/v1/admin/users/{user}/vas-charges", headers=finance)).json()["items"]
    assert sorted((c["consent_id"], c["status"]) for c in listed) == sorted(
        [(accepted.consent_id, "refunded"), (short.consent_id, "failed")]
    )
    entries = (await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))).json()["items"]
    assert (entries[0]["kind"], entries[0]["amount_fen"]) == ("vas_refund", 300)
