"""Integration: credit scores move by rules (once per source), admins adjust with an audit, and the
score decides deposit-free borrowing or refusal (GET /v1/wallet tells billing). Real PG + broker."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from asset_credit_svc.charges import service as charges
from asset_credit_svc.credit import service as credit
from contracts import Topic, event_adapter, new_event
from contracts.events import ChargeRequested, RentalEnded
from kit.db import unit_of_work
from kit.testing import staff_actions

pytestmark = pytest.mark.integration


def ended(user: uuid.UUID, seconds: int, *, purchased: bool = False) -> RentalEnded:
    start = datetime.now(UTC) - timedelta(seconds=seconds)
    return RentalEnded(
        rental_id=uuid.uuid4(),
        user_id=user,
        bank_id="B",
        start_cabinet_id="C1",
        return_cabinet_id="C2",
        started_at=start,
        ended_at=start + timedelta(seconds=seconds),
        duration_seconds=seconds,
        fee_fen=150,
        purchased=purchased,
    )


async def wallet(svc, user: uuid.UUID) -> dict:
    response = await svc.client.get("/v1/wallet", headers=svc.auth(user))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_rules_move_the_score_once_per_source(svc) -> None:
    settings = svc.runtime.settings
    user = uuid.uuid4()
    body = await wallet(svc, user)
    assert (body["credit_score"], body["credit_level"], body["borrow_refusal"]) == (600, "good", None)
    on_time, late, lost = ended(user, 600), ended(user, 2 * 86400), ended(user, 3 * 86400, purchased=True)
    for data in (on_time, on_time, late, lost):  # the first one delivered twice
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            await credit.on_rental_ended(session, settings, data)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        request = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=150)
        assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "failed"
    expected = 600 + 5 - 30 - 150 - 50
    body = await wallet(svc, user)
    assert body["credit_score"] == expected == 375
    assert body["credit_level"] == "poor"
    assert body["borrow_refusal"] == "deposit_required"
    # Each change is an event for analytics' user attributes (asset.credit.v1), through the outbox.
    async with svc.runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT payload FROM outbox WHERE topic = 'asset.credit.v1' AND key = :k ORDER BY id"),
                {"k": str(user)},
            )
        ).all()
    changes = [event_adapter.validate_json(payload).data for (payload,) in rows]
    assert [(c.score, c.reason) for c in changes] == [
        (605, "on_time_return"),
        (575, "overdue_return"),
        (425, "lost_bank"),
        (375, "unpaid_debt"),
    ]
    assert changes[-1].level == "poor"
    assert [c.deposit_free for c in changes] == [c.score >= settings.credit_no_deposit_min for c in changes]
    history = (await svc.client.get("/v1/credit/history", headers=svc.auth(user))).json()["items"]
    assert [(h["reason"], h["delta"]) for h in history] == [
        ("unpaid_debt", -50),
        ("lost_bank", -150),
        ("overdue_return", -30),
        ("on_time_return", 5),
    ]
    assert history[-1]["source"] == "billing.rental.ended"
    assert history[-1]["source_id"] == str(on_time.rental_id)
    mine = (await svc.client.get("/v1/credit", headers=svc.auth(user))).json()
    assert mine["score"] == 375
    assert mine["deposit_required"] is True


async def test_a_rule_at_the_bound_is_recorded_but_announces_nothing(svc) -> None:
    """A user at 1000 returning on time: the change is recorded (once per rental, delta 0) but no
    asset.credit.changed goes out: nothing changed for the audience or analytics (issue 9)."""
    settings = svc.runtime.settings
    user = uuid.uuid4()
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        await credit.change(
            session, settings, user, 1000, reason="admin_adjustment", source="admin", source_id=f"{user}"
        )
    on_time = ended(user, 600)
    for _ in range(2):  # delivered twice
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            await credit.on_rental_ended(session, settings, on_time)
    history = (await svc.client.get("/v1/credit/history", headers=svc.auth(user))).json()["items"]
    assert [(h["reason"], h["delta"], h["score_after"]) for h in history] == [
        ("on_time_return", 0, 1000),
        ("admin_adjustment", 400, 1000),
    ]
    async with svc.runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT payload FROM outbox WHERE topic = 'asset.credit.v1' AND key = :k ORDER BY id"),
                {"k": str(user)},
            )
        ).all()
    assert [event_adapter.validate_json(payload).data.reason for (payload,) in rows] == ["admin_adjustment"]


async def test_admin_adjustments_are_audited_and_decide_borrowing(svc) -> None:
    user = uuid.uuid4()
    admin = {"Authorization": f"Bearer {svc.signer.issue('risk-1', kind='admin', roles=['support'])}"}
    path = f"/v1/admin/credit/{user}/adjustments"
    assert (await svc.client.post(path, json={"delta": -1, "note": "x"}, headers=svc.auth(user))).status_code == 403
    assert (await svc.client.post(path, json={"delta": -1, "note": "x"}, headers=admin)).status_code == 400
    keyed = {**admin, "Idempotency-Key": "adj-1"}
    first = await svc.client.post(path, json={"delta": -400, "note": "fraud review"}, headers=keyed)
    assert first.status_code == 201, first.text
    assert first.json()["score_after"] == 200
    assert first.json()["actor"] == "risk-1"
    again = await svc.client.post(path, json={"delta": -400, "note": "fraud review"}, headers=keyed)
    assert again.status_code == 200
    other = await svc.client.post(path, json={"delta": -5, "note": "other"}, headers=keyed)
    assert other.status_code == 409
    body = await wallet(svc, user)
    assert (body["credit_score"], body["credit_level"], body["borrow_refusal"]) == (200, "bad", "credit_too_low")
    # Clamped at 1000; the audit is append-only.
    up = await svc.client.post(path, json={"delta": 1000, "note": "cleared"}, headers={**admin, "Idempotency-Key": "2"})
    assert up.json()["score_after"] == 1000
    assert (await wallet(svc, user))["credit_level"] == "excellent"
    audit = (await svc.client.get(f"/v1/admin/credit/{user}", headers=admin)).json()["items"]
    assert [a["note"] for a in audit] == ["cleared", "fraud review"]
    # ... and each adjustment is on the platform's audit trail, written with it (kit.audit, issue 15).
    trail = [a for a in await staff_actions(svc.runtime.engine, "credit.adjust") if a.target_id == str(user)]
    assert trail and {(a.actor_id, a.target_type) for a in trail} == {("risk-1", "user")}
    changes = [(a.before, a.after) for a in trail if "replay_of" not in a.details]
    assert changes == [({"score": 600}, {"score": 200}), ({"score": 200}, {"score": 1000})]
    with pytest.raises(DBAPIError, match="append-only"):
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            await session.execute(text("DELETE FROM credit_changes"))
    assert (await svc.client.post(path, json={"delta": 5000, "note": "x"}, headers=keyed)).status_code == 422


async def test_a_rental_ended_event_moves_the_score_over_kafka(service_factory, producer) -> None:
    async with service_factory() as svc:
        await svc.wait_consumers_ready()
        user = uuid.uuid4()
        data = ended(user, 60)
        envelope = new_event(data, key=str(data.rental_id), producer="billing-svc-test")
        await producer.send_and_wait(Topic.RENTALS.value, envelope.to_bytes(), key=envelope.key.encode())
        for _ in range(300):
            if (await wallet(svc, user))["credit_score"] == 605:
                break
            await asyncio.sleep(0.1)
        assert (await wallet(svc, user))["credit_score"] == 605
