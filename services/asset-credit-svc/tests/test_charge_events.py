"""Integration: charges billing requests over Kafka are settled against the wallet (real PG + broker)."""

import asyncio
import uuid

import pytest
from sqlalchemy import text

from contracts import Topic, new_event
from contracts.events import ChargeRequested

pytestmark = pytest.mark.integration


async def sql(svc, query: str, **params):
    async with svc.runtime.engine.connect() as conn:
        return (await conn.execute(text(query), params)).all()


def charge_request(user_id: uuid.UUID, amount_fen: int, charge_id: uuid.UUID | None = None) -> ChargeRequested:
    return ChargeRequested(
        charge_id=charge_id or uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user_id, amount_fen=amount_fen
    )


async def produce(producer, data: ChargeRequested):
    envelope = new_event(data, key=str(data.user_id), producer="billing-svc-test")
    await producer.send_and_wait(Topic.CHARGES.value, envelope.to_bytes(), key=envelope.key.encode())
    return envelope


async def wait_balance(svc, user_id, expected: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (balance := await svc.balance(user_id)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"balance {balance}, expected {expected}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def kafka_svc(service_factory):
    """One app for the Kafka tests (each uses its own users): a consumer group joins once."""
    async with service_factory() as service:
        await service.wait_consumers_ready()
        yield service


async def test_charge_from_kafka_debits_once(kafka_svc, producer, payments_topic) -> None:
    svc = kafka_svc
    user = await svc.funded_user(1000)
    request = charge_request(user, 300)
    envelope = await produce(producer, request)
    # The same event redelivered, and the same charge asked for again in a new event.
    await producer.send_and_wait(Topic.CHARGES.value, envelope.to_bytes(), key=envelope.key.encode())
    await produce(producer, request)

    settled = await payments_topic.wait_for(
        lambda e: e.type == "asset.charge.settled" and e.data.charge_id == request.charge_id
    )
    assert settled.key == str(user)
    assert settled.data.amount_fen == 300 and settled.data.balance_fen == 700
    assert settled.data.rental_id == request.rental_id and settled.data.user_id == user
    await wait_balance(svc, user, 700)

    # Let every copy be handled, then check that only one counted.
    marker = charge_request(user, 1)
    await produce(producer, marker)
    await payments_topic.wait_for(lambda e: getattr(e.data, "charge_id", None) == marker.charge_id)
    assert await svc.balance(user) == 699
    about_charge = [e for e in payments_topic.seen if getattr(e.data, "charge_id", None) == request.charge_id]
    assert len(about_charge) == 1
    handled = await sql(
        svc,
        "SELECT count(*) FROM charges c JOIN processed_events p ON p.event_id = c.source_event_id "
        "WHERE c.charge_id IN (:a, :b)",
        a=request.charge_id,
        b=marker.charge_id,
    )
    assert handled[0][0] == 2
    entries = (await svc.client.get("/v1/wallet/entries", headers=svc.auth(user))).json()["items"]
    assert [(e["kind"], e["amount_fen"], e["reference"]) for e in entries[1:]] == [
        ("charge", -300, f"charge:{request.charge_id}"),
        ("top_up", 1000, entries[-1]["reference"]),
    ]


async def test_short_balance_fails_the_charge(kafka_svc, producer, payments_topic) -> None:
    svc = kafka_svc
    user = await svc.funded_user(200)
    request = charge_request(user, 201)
    await produce(producer, request)
    failed = await payments_topic.wait_for(lambda e: getattr(e.data, "charge_id", None) == request.charge_id)
    assert failed.type == "asset.charge.failed"
    assert failed.data.reason == "insufficient_balance" and failed.data.amount_fen == 201
    assert failed.key == str(user)
    assert await svc.balance(user) == 200
    # A user with no wallet at all is short too.
    stranger = charge_request(uuid.uuid4(), 50)
    await produce(producer, stranger)
    failed = await payments_topic.wait_for(lambda e: getattr(e.data, "charge_id", None) == stranger.charge_id)
    assert failed.type == "asset.charge.failed"


async def test_zero_charge_settles_without_postings(kafka_svc, producer, payments_topic) -> None:
    svc = kafka_svc
    user = await svc.funded_user(500)
    request = charge_request(user, 0)
    await produce(producer, request)
    settled = await payments_topic.wait_for(lambda e: getattr(e.data, "charge_id", None) == request.charge_id)
    assert settled.type == "asset.charge.settled" and settled.data.balance_fen == 500
    reference = f"charge:{request.charge_id}"
    assert (await sql(svc, "SELECT count(*) FROM ledger_transactions WHERE reference = :r", r=reference))[0][0] == 0
    status = await sql(svc, "SELECT status FROM charges WHERE charge_id = :c", c=request.charge_id)
    assert status == [("settled",)]
