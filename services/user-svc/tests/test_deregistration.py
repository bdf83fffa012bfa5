"""Deregistration: obligations projection, refund of the balance, erasure of the account."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from contracts import new_event
from contracts.events import ChargeSettled, DebtWaived, RentalEnded, RentalStarted
from kit.testing import app_client, kafka_bootstrap, truncate_all
from user_svc.main import create_app

from .support import (
    PASSWORD,
    PHONE,
    assert_problem,
    bearer,
    login,
    refresh,
    register,
    sql,
)

pytestmark = pytest.mark.integration


async def emit(*events: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap())
    await producer.start()
    try:
        for data in events:
            envelope = new_event(data, key=str(data.rental_id), producer="test")
            await producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=envelope.key.encode())
    finally:
        await producer.stop()


async def wait_obligation(database_url: str, rental_id: uuid.UUID, **expected: Any) -> None:
    deadline = time.monotonic() + 90
    while True:
        rows = await sql(
            database_url, "SELECT state, fee_fen, paid FROM rental_obligations WHERE rental_id = $1", rental_id
        )
        if rows and all(rows[0][k] == v for k, v in expected.items()):
            return
        assert time.monotonic() < deadline, f"projection of {rental_id} never reached {expected}: {rows}"
        await asyncio.sleep(0.2)


async def test_deregistration(settings, database_url):
    await truncate_all(database_url)
    # Its own consumer group, so no member left behind by an earlier run delays the assignment.
    with_projection = settings.model_copy(
        update={"obligations_consumer": True, "kafka_consumer_group": f"user-svc-test-{uuid.uuid4().hex[:8]}"}
    )
    app = create_app(with_projection)
    async with app_client(app) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                await app.state.runtime.readiness_checks["consumers"]()
                break
            except RuntimeError:
                assert time.monotonic() < deadline, "the obligations consumer was never assigned partitions"
                await asyncio.sleep(0.2)
        await _deregistration(client, settings, database_url)


async def _deregistration(client, settings, database_url):
    user_id = uuid.UUID((await register(client, display_name="Ming"))["user_id"])
    session = await login(client)
    headers = bearer(session["access_token"])
    now = datetime.now(UTC)
    rental_id = uuid.uuid4()
    price = {"period_minutes": 30, "price_per_period_fen": 150, "free_minutes": 0, "daily_cap_fen": 2000}
    started = RentalStarted(
        rental_id=rental_id, user_id=user_id, bank_id="PB-1", cabinet_id="CAB-1", slot=1, started_at=now, price=price
    )
    await emit(started)
    await wait_obligation(database_url, rental_id, state="active")
    deregister = "/v1/users/me/deregistration"
    assert_problem(await client.post(deregister, json={"password": PASSWORD}, headers=headers), 409, "rental_active")

    ended = RentalEnded(
        rental_id=rental_id,
        user_id=user_id,
        bank_id="PB-1",
        start_cabinet_id="CAB-1",
        return_cabinet_id="CAB-2",
        started_at=now,
        ended_at=now + timedelta(minutes=20),
        duration_seconds=1200,
        fee_fen=150,
    )
    await emit(ended)
    await wait_obligation(database_url, rental_id, state="ended", paid=False)
    problem = assert_problem(
        await client.post(deregister, json={"password": PASSWORD}, headers=headers), 409, "debt_unpaid"
    )
    assert problem["unpaid_fen"] == 150

    settled = ChargeSettled(
        charge_id=uuid.uuid4(), rental_id=rental_id, user_id=user_id, amount_fen=150, balance_fen=0, settled_at=now
    )
    await emit(settled)
    await wait_obligation(database_url, rental_id, paid=True)
    # a second unpaid rental that support waives no longer counts as owed
    waived_id = uuid.uuid4()
    await emit(ended.model_copy(update={"rental_id": waived_id, "fee_fen": 300}))
    await wait_obligation(database_url, waived_id, state="ended", paid=False)
    problem = assert_problem(
        await client.post(deregister, json={"password": PASSWORD}, headers=headers), 409, "debt_unpaid"
    )
    assert problem["unpaid_fen"] == 300
    await emit(DebtWaived(rental_id=waived_id, user_id=user_id, waived_fen=300, at=now))
    await wait_obligation(database_url, waived_id, paid=True)
    assert_problem(
        await client.post(deregister, json={"password": "wrong password"}, headers=headers), 401, "invalid_credentials"
    )
    done = await client.post(deregister, json={"password": PASSWORD}, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["user_id"] == str(user_id)

    # every token ended; the account no longer logs in
    assert_problem(await client.get("/v1/users/me", headers=headers), 401, "token_revoked")
    assert_problem(await refresh(client, session["refresh_token"]), 401, "invalid_refresh_token")
    assert_problem(
        await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD}), 401, "invalid_credentials"
    )
    rows = await sql(database_url, "SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", str(user_id))
    assert [r["event_type"] for r in rows] == ["user.user.registered", "user.session.revoked", "user.user.deregistered"]

    # the number registers again, as a new user
    again = await register(client)
    assert again["user_id"] != str(user_id)

    # the anonymisation job clears personal data after the retention period (here: none)
    (row,) = await sql(database_url, "SELECT former_phone, display_name FROM users WHERE id = $1", user_id)
    assert row["former_phone"] == PHONE and row["display_name"] == "Ming"
    quick = settings.model_copy(update={"deregistration_retention_s": 0, "anonymise_interval_s": 0.1})
    async with app_client(create_app(quick)):
        deadline = time.monotonic() + 10
        while (await sql(database_url, "SELECT anonymised_at FROM users WHERE id = $1", user_id))[0][
            "anonymised_at"
        ] is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    (row,) = await sql(
        database_url,
        "SELECT phone, former_phone, display_name, password_hash, status FROM users WHERE id = $1",
        user_id,
    )
    assert row["former_phone"] is None and row["display_name"] is None and row["password_hash"] == ""
    assert row["phone"].startswith("~") and row["status"] == "deregistered"
    decisions = await sql(database_url, "SELECT phone FROM eligibility_decisions WHERE user_id = $1", user_id)
    assert [d["phone"] for d in decisions] == [""]  # the registration's decision stays, without the number
