"""Rentals through the app against the real PostgreSQL and Kafka; the test plays device and asset."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from billing_svc.main import create_app
from billing_svc.rentals import service
from billing_svc.rentals.service import charge_id_for
from billing_svc.settings import Settings
from contracts import Envelope, event_adapter, new_event
from contracts.events import (
    BankEjected,
    BankReturned,
    ChargeFailed,
    ChargeRequested,
    ChargeSettled,
    EjectFailureReason,
)
from kit.auth import TokenSigner
from kit.db import unit_of_work
from kit.testing import app_client

if TYPE_CHECKING:
    from conftest import Billing, FakeDevice, FakeWallets

pytestmark = pytest.mark.integration

R = EjectFailureReason


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def user(signer: TokenSigner) -> tuple[str, dict[str, str]]:
    user_id = str(uuid.uuid4())
    return user_id, {"Authorization": f"Bearer {signer.issue(user_id)}"}


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> Any:
    end = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout_s}s (last: {result!r})")
        await asyncio.sleep(0.05)


async def rental_row(billing: Billing, rental_id: str) -> dict[str, Any]:
    async with billing.runtime.sessionmaker() as session:
        row = (await session.execute(text("SELECT * FROM rentals WHERE id = :id"), {"id": rental_id})).mappings().one()
    return dict(row)


async def outbox(billing: Billing, rental_id: str) -> list[Envelope]:
    async with billing.runtime.sessionmaker() as session:
        payloads = (await session.execute(text("SELECT payload FROM outbox ORDER BY id"))).scalars().all()
    envelopes = [event_adapter.validate_json(bytes(p)) for p in payloads]
    return [e for e in envelopes if str(getattr(e.data, "rental_id", "")) == rental_id]


def of_type(envelopes: list[Envelope], event_type: str) -> list[Envelope]:
    return [e for e in envelopes if e.type == event_type]


async def borrow_active(
    billing: Billing, device: FakeDevice, headers: dict[str, str], *, bank: str | None = None
) -> dict[str, Any]:
    bank = bank or unique("BANK")
    cabinet = unique("CAB")
    device.behaviours[bank] = device.ejects(bank, cabinet, slot=3)
    response = await billing.client.post("/v1/rentals", json={"code": bank}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def return_bank(
    device: FakeDevice, bank_id: str, returned_at: datetime, report_id: str | None = None
) -> Envelope:
    now = datetime.now(UTC)
    data = BankReturned(
        report_id=report_id or unique("RPT"),
        bank_id=bank_id,
        cabinet_id="CAB-RETURN",
        slot=5,
        battery_pct=40,
        returned_at=returned_at,
        device_reported_at=returned_at,
        received_at=now,
    )
    return await device.emit(data, key=bank_id)


# ---- pricing and reads ----------------------------------------------------------------------


async def test_pricing_is_shown_before_borrowing(billing: Billing) -> None:
    response = await billing.client.get("/v1/pricing")
    assert response.status_code == 200
    body = response.json()
    assert body["period_minutes"] == 30
    assert body["price_per_period_fen"] == 150
    assert body["free_minutes"] == 0
    assert body["daily_cap_fen"] == 2000
    assert body["currency"] == "CNY"


async def test_endpoints_need_a_user_token(billing: Billing) -> None:
    assert (await billing.client.post("/v1/rentals", json={"code": "X"})).status_code == 401
    assert (await billing.client.get("/v1/rentals/current")).status_code == 401


async def test_no_current_rental_is_404(billing: Billing, signer: TokenSigner) -> None:
    _, headers = user(signer)
    response = await billing.client.get("/v1/rentals/current", headers=headers)
    assert response.status_code == 404
    assert response.json()["code"] == "no_active_rental"


# ---- borrow ---------------------------------------------------------------------------------


async def test_borrow_answers_active_rental(
    billing: Billing, device: FakeDevice, wallets: FakeWallets, signer: TokenSigner
) -> None:
    user_id, headers = user(signer)
    bank, cabinet = unique("BANK"), unique("CAB")
    device.behaviours[bank] = device.ejects(bank, cabinet, slot=3)

    started = time.monotonic()
    response = await billing.client.post("/v1/rentals", json={"code": bank}, headers=headers)
    assert time.monotonic() - started < 5
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] == "active"
    assert body["bank_id"] == bank
    assert body["cabinet_id"] == cabinet
    assert body["slot"] == 3
    assert body["started_at"] is not None
    assert body["price"] == {
        "period_minutes": 30,
        "price_per_period_fen": 150,
        "free_minutes": 0,
        "daily_cap_fen": 2000,
        "purchase_ceiling_fen": 9900,
    }
    # The balance check forwarded the user's own token.
    assert wallets.seen_tokens[-1] == headers["Authorization"].removeprefix("Bearer ")

    rental_id = body["rental_id"]
    [command] = [c for c in device.commands if str(c.rental_id) == rental_id]
    assert command.code == bank
    assert command.user_id == uuid.UUID(user_id)
    assert command.deadline > datetime.now(UTC) - timedelta(seconds=5)

    [started_event] = of_type(await outbox(billing, rental_id), "billing.rental.started")
    assert started_event.key == rental_id

    current = await billing.client.get("/v1/rentals/current", headers=headers)
    assert current.status_code == 200
    assert current.json()["rental_id"] == rental_id
    assert current.json()["elapsed_seconds"] >= 0
    # What it would cost if returned now: the first period once a whole second has passed.
    assert current.json()["running_fee_fen"] == (150 if current.json()["elapsed_seconds"] >= 1 else 0)
    assert current.json()["bank_position"] is None  # device-svc knows no rented bank of this user (yet)

    # 6.1.9: where the bank was last reported, from device-svc (asked with the user's own token), only
    # with the user's consent.
    seen = {"lat": 22.541, "lon": 114.052, "reported_at": "2026-12-05T10:00:00Z"}
    answer = {"bank_id": bank, "rental_id": rental_id, "battery_pct": 80, "has_module": True}
    wallets.rented[user_id] = answer | {"position_consent": True, "position": seen}
    current = (await billing.client.get("/v1/rentals/current", headers=headers)).json()
    assert current["position_consent"] is True
    assert current["bank_position"] == {"lat": 22.541, "lon": 114.052, "reported_at": "2026-12-05T10:00:00Z"}
    wallets.rented[user_id] = answer | {"position_consent": False, "position": None}
    current = (await billing.client.get("/v1/rentals/current", headers=headers)).json()
    assert (current["position_consent"], current["bank_position"]) == (False, None)
    wallets.rented[user_id] = answer | {"bank_id": "another", "position_consent": True, "position": seen}
    assert (await billing.client.get("/v1/rentals/current", headers=headers)).json()["bank_position"] is None

    own = await billing.client.get(f"/v1/rentals/{rental_id}", headers=headers)
    assert own.status_code == 200
    assert own.json()["state"] == "active"
    assert (own.json()["bank_id"], own.json()["bank_model"]) == (bank, "PB-5000")
    _, other_headers = user(signer)
    theirs = await billing.client.get(f"/v1/rentals/{rental_id}", headers=other_headers)
    assert theirs.status_code == 404
    assert theirs.json()["code"] == "rental_not_found"


EXPECTED = [
    (R.BANK_BATTERY_LOW, 409),
    (R.BANK_FAULTY, 409),
    (R.BANK_NOT_AVAILABLE, 409),
    (R.NO_RENTABLE_BANK, 409),
    (R.UNKNOWN_CODE, 404),
    (R.CABINET_OFFLINE, 503),
    (R.DEVICE_NO_ANSWER, 504),
    (R.EJECT_FAILED, 502),
    (R.MOTOR_FAULT, 502),
    (R.BANK_NOT_PRESENT, 502),
    (R.COMMAND_EXPIRED, 502),
]


def test_every_failure_reason_has_an_answer() -> None:
    assert {reason for reason, _ in EXPECTED} == set(EjectFailureReason)


@pytest.mark.parametrize(("reason", "status"), EXPECTED)
async def test_eject_failure_answers_its_reason(
    billing: Billing, device: FakeDevice, signer: TokenSigner, reason: EjectFailureReason, status: int
) -> None:
    _, headers = user(signer)
    code = unique("CODE")
    device.behaviours[code] = device.fails(reason)

    started = time.monotonic()
    response = await billing.client.post("/v1/rentals", json={"code": code}, headers=headers)
    elapsed = time.monotonic() - started
    if reason == R.DEVICE_NO_ANSWER:
        # device-svc's deadline sweep may overtake the cabinet's answer: the borrow waits to its budget's end.
        assert 4.0 <= elapsed < 5.0
    else:
        assert elapsed < 4.0, "a device answer must not wait for the deadline"
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == reason.value
    rental_id = body["rental_id"]

    row = await rental_row(billing, rental_id)
    assert row["state"] == "failed"
    assert row["failure_reason"] == reason.value
    [failed] = of_type(await outbox(billing, rental_id), "billing.rental.failed")
    assert failed.data.reason == reason  # type: ignore[union-attr]
    # A failed borrow does not block the next one.
    await borrow_active(billing, device, headers)


async def test_no_device_answer_is_504_within_5s_failed_and_a_late_eject_revives(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    code = unique("BANK")
    device.behaviours[code] = device.silent

    started = time.monotonic()
    response = await billing.client.post("/v1/rentals", json={"code": code}, headers=headers)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "device_no_answer"
    assert 4.0 <= elapsed < 5.0
    rental_id = response.json()["rental_id"]
    # The answer and the rental agree: decided under the rental's lock before the user heard it.
    assert (await rental_row(billing, rental_id))["state"] == "failed"
    assert (await rental_row(billing, rental_id))["failure_reason"] == "device_no_answer"

    [command] = [c for c in device.commands if str(c.rental_id) == rental_id]
    late = device.ejects(code, "CAB-LATE")(command)
    assert late is not None
    await device.emit(late, key="CAB-LATE")

    async def active() -> bool:
        return (await rental_row(billing, rental_id))["state"] == "active"

    await eventually(active)


async def test_second_borrow_while_active_is_409(billing: Billing, device: FakeDevice, signer: TokenSigner) -> None:
    _, headers = user(signer)
    first = await borrow_active(billing, device, headers)
    second_code = unique("BANK")
    device.behaviours[second_code] = device.ejects(second_code, "CAB")
    response = await billing.client.post("/v1/rentals", json={"code": second_code}, headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "active_rental_exists"
    assert response.json()["rental_id"] == first["rental_id"]
    assert not [c for c in device.commands if c.code == second_code]


async def test_low_balance_is_402(
    billing: Billing, device: FakeDevice, wallets: FakeWallets, signer: TokenSigner
) -> None:
    user_id, headers = user(signer)
    wallets.balances[user_id] = 99
    code = unique("BANK")
    device.behaviours[code] = device.ejects(code, "CAB")
    response = await billing.client.post("/v1/rentals", json={"code": code}, headers=headers)
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_balance"
    wallets.balances[user_id] = 100
    response = await billing.client.post("/v1/rentals", json={"code": code}, headers=headers)
    assert response.status_code == 201


async def test_wallet_unreachable_is_503(
    billing: Billing, settings_for: Callable[..., Settings], dead_url: str, signer: TokenSigner
) -> None:
    app = create_app(settings_for(dead_url))
    async with app_client(app) as client:
        _, headers = user(signer)
        response = await client.post("/v1/rentals", json={"code": unique("BANK")}, headers=headers)
    assert response.status_code == 503
    assert response.json()["code"] == "wallet_unavailable"
    async with billing.runtime.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM rentals"))).scalar_one() == 0


async def test_idempotency_key_replays_the_same_rental(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    bank = unique("BANK")
    device.behaviours[bank] = device.ejects(bank, "CAB")
    keyed = {**headers, "Idempotency-Key": unique("key")}
    first = await billing.client.post("/v1/rentals", json={"code": bank}, headers=keyed)
    again = await billing.client.post("/v1/rentals", json={"code": bank}, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert first.json()["rental_id"] == again.json()["rental_id"]
    assert len([c for c in device.commands if c.code == bank]) == 1
    other = await billing.client.post("/v1/rentals", json={"code": unique("BANK")}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


async def test_concurrent_borrows_of_one_bank_make_one_rental(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    bank = unique("BANK")
    device.behaviours[bank] = device.ejects_once(bank, "CAB")
    users = [user(signer) for _ in range(8)]
    responses = await asyncio.gather(
        *(billing.client.post("/v1/rentals", json={"code": bank}, headers=h) for _, h in users)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"bank_not_available"}
    async with billing.runtime.sessionmaker() as session:
        active = (
            await session.execute(
                text("SELECT count(*) FROM rentals WHERE bank_id = :b AND state = 'active'"), {"b": bank}
            )
        ).scalar_one()
    assert active == 1


async def test_database_refuses_two_active_rentals_of_one_bank(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    body = await borrow_active(billing, device, headers)
    row = await rental_row(billing, body["rental_id"])
    clone = {**row, "id": uuid.uuid4(), "user_id": uuid.uuid4(), "command_id": uuid.uuid4(), "charge_id": None}
    columns = ", ".join(clone)
    values = ", ".join(f":{k}" for k in clone)
    with pytest.raises(IntegrityError, match="uq_rentals_bank_active"):
        async with unit_of_work(billing.runtime.sessionmaker) as session:
            await session.execute(text(f"INSERT INTO rentals ({columns}) VALUES ({values})"), clone)


async def test_a_bank_ejected_again_closes_its_stale_rental(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    """A return we never heard of: the device ejects the same bank for someone else."""
    _, headers = user(signer)
    bank = unique("BANK")
    first = await borrow_active(billing, device, headers, bank=bank)
    _, other_headers = user(signer)
    second = await borrow_active(billing, device, other_headers, bank=bank)
    assert second["state"] == "active"
    stale = await rental_row(billing, first["rental_id"])
    assert stale["state"] in ("ended", "settled")  # settled when it lasted under a second (free)
    assert stale["return_cabinet_id"] == second["cabinet_id"]
    assert stale["ended_at"] == datetime.fromisoformat(second["started_at"])


# ---- return, charge, payment ----------------------------------------------------------------


async def test_return_ends_at_the_device_time_and_requests_one_charge(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    user_id, headers = user(signer)
    body = await borrow_active(billing, device, headers)
    rental_id = body["rental_id"]
    started_at = datetime.fromisoformat(body["started_at"])
    returned_at = started_at + timedelta(minutes=45, seconds=7)

    reported = time.monotonic()
    await return_bank(device, body["bank_id"], returned_at)

    async def ended() -> dict[str, Any] | None:
        row = await rental_row(billing, rental_id)
        return row if row["state"] == "ended" else None

    row = await eventually(ended)
    assert time.monotonic() - reported < 5, "billing must stop within seconds of the report"
    assert row["ended_at"] == returned_at
    assert row["duration_seconds"] == 45 * 60 + 7
    assert row["fee_fen"] == 300
    assert row["return_cabinet_id"] == "CAB-RETURN"

    events = await outbox(billing, rental_id)
    [ended_event] = of_type(events, "billing.rental.ended")
    assert ended_event.data.ended_at == returned_at  # type: ignore[union-attr]
    assert ended_event.data.fee_fen == 300  # type: ignore[union-attr]
    [charge] = of_type(events, "billing.charge.requested")
    assert isinstance(charge.data, ChargeRequested)
    assert charge.data.charge_id == charge_id_for(uuid.UUID(rental_id))
    assert charge.data.amount_fen == 300
    assert charge.data.region_code == "440305"  # the start cabinet's division, for finance's revenue by region
    assert charge.key == user_id

    history = await billing.client.get("/v1/rentals", headers=headers)
    [item] = history.json()["items"]
    assert item["duration_seconds"] == 45 * 60 + 7
    assert item["fee_fen"] == 300
    assert item["bank_id"] == body["bank_id"]
    assert (await billing.client.get("/v1/rentals/current", headers=headers)).status_code == 404


async def test_duplicate_and_repeated_returns_make_one_charge(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    body = await borrow_active(billing, device, headers)
    rental_id = body["rental_id"]
    started_at = datetime.fromisoformat(body["started_at"])
    first_at = started_at + timedelta(minutes=10)

    envelope = await return_bank(device, body["bank_id"], first_at)
    await device.send(envelope)  # the same event delivered twice
    await return_bank(device, body["bank_id"], started_at + timedelta(hours=3))  # another report

    async def processed() -> bool:
        async with billing.runtime.sessionmaker() as session:
            n = (
                await session.execute(
                    text("SELECT count(*) FROM processed_events WHERE event_type = 'device.bank.returned'")
                )
            ).scalar_one()
        return n >= 2

    await eventually(processed)
    await asyncio.sleep(0.5)  # let the redelivered copy reach the consumer too
    row = await rental_row(billing, rental_id)
    assert row["state"] == "ended"
    assert row["ended_at"] == first_at
    assert row["fee_fen"] == 150
    events = await outbox(billing, rental_id)
    assert len(of_type(events, "billing.rental.ended")) == 1
    assert len(of_type(events, "billing.charge.requested")) == 1


async def test_charge_settled_settles_and_charge_failed_leaves_unpaid(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    outcomes: dict[str, str] = {}
    for outcome in ("settled", "unpaid"):
        user_id, headers = user(signer)
        body = await borrow_active(billing, device, headers)
        rental_id = body["rental_id"]
        await return_bank(device, body["bank_id"], datetime.fromisoformat(body["started_at"]) + timedelta(minutes=1))

        async def ended(rid: str = rental_id) -> bool:
            return (await rental_row(billing, rid))["state"] == "ended"

        await eventually(ended)
        charge_id = charge_id_for(uuid.UUID(rental_id))
        common = {"charge_id": charge_id, "rental_id": uuid.UUID(rental_id), "user_id": uuid.UUID(user_id)}
        if outcome == "settled":
            data: Any = ChargeSettled(**common, amount_fen=150, balance_fen=850, settled_at=datetime.now(UTC))
        else:
            data = ChargeFailed(**common, amount_fen=150, reason="insufficient_balance")
        envelope = new_event(data, key=user_id, producer="test-asset")
        await device.send(envelope)
        await device.send(envelope)
        outcomes[rental_id] = outcome

    async def all_done() -> bool:
        states = {rid: (await rental_row(billing, rid))["state"] for rid in outcomes}
        return states == outcomes

    await eventually(all_done)


async def test_return_before_start_costs_nothing_and_is_settled(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    body = await borrow_active(billing, device, headers)
    started_at = datetime.fromisoformat(body["started_at"])
    await return_bank(device, body["bank_id"], started_at - timedelta(minutes=3))

    async def settled() -> dict[str, Any] | None:
        row = await rental_row(billing, body["rental_id"])
        return row if row["state"] == "settled" else None

    row = await eventually(settled)
    assert row["ended_at"] == started_at
    assert row["fee_fen"] == 0
    assert row["charge_id"] is None
    assert not of_type(await outbox(billing, body["rental_id"]), "billing.charge.requested")


async def test_return_of_a_bank_without_rental_is_ignored(billing: Billing, device: FakeDevice) -> None:
    await return_bank(device, unique("BANK"), datetime.now(UTC))

    async def processed() -> bool:
        async with billing.runtime.sessionmaker() as session:
            n = (await session.execute(text("SELECT count(*) FROM processed_events"))).scalar_one()
        return n >= 1

    await eventually(processed)
    async with billing.runtime.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM outbox"))).scalar_one() == 0


async def test_history_is_newest_first_with_a_cursor(billing: Billing, device: FakeDevice, signer: TokenSigner) -> None:
    _, headers = user(signer)
    ids = []
    for _ in range(3):
        body = await borrow_active(billing, device, headers)
        ids.append(body["rental_id"])
        await return_bank(device, body["bank_id"], datetime.fromisoformat(body["started_at"]) + timedelta(minutes=1))

        async def closed(rid: str = body["rental_id"]) -> bool:
            return (await rental_row(billing, rid))["state"] != "active"

        await eventually(closed)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await billing.client.get("/v1/rentals", params=params, headers=headers)).json()
        seen += [item["rental_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = await billing.client.get("/v1/rentals", params={"cursor": "not-a-cursor"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_cursor"


async def test_stale_unlocking_rentals_are_failed_by_the_sweeper(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    """A rental whose borrow never decided (its instance stopped while waiting) is failed by the sweeper."""
    user_id, headers = user(signer)
    code = unique("BANK")
    device.behaviours[code] = device.silent
    settings = service.settings_of(billing.runtime)
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        requested = await service.request_rental(
            session,
            billing.runtime,
            rental_id=uuid.uuid4(),
            user_id=uuid.UUID(user_id),
            code=code,
            idempotency_key=None,
            deadline=service.eject_deadline(settings, budget_left_s=settings.borrow_answer_budget_s),
        )
    rental_id = str(requested.id)

    async def command_seen() -> bool:
        return any(str(c.rental_id) == rental_id for c in device.commands)

    await eventually(command_seen)
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        n = await service.expire_unlocking(session, billing.runtime, datetime.now(UTC) + timedelta(seconds=1))
    assert n == 1
    row = await rental_row(billing, rental_id)
    assert row["state"] == "failed"
    assert row["failure_reason"] == "device_no_answer"
    # The user can borrow again. A late eject for the failed rental means the user holds that bank
    # too: the rental becomes active at the device's time (compensation, test_compensation.py),
    # without counting against the one-open-rental rule.
    [command] = [c for c in device.commands if str(c.rental_id) == rental_id]
    late = BankEjected(
        command_id=command.command_id,
        rental_id=command.rental_id,
        bank_id=code,
        cabinet_id="CAB",
        slot=1,
        battery_pct=80,
        ejected_at=datetime.now(UTC),
    )
    await borrow_active(billing, device, headers)
    await device.emit(late, key="CAB")

    async def revived() -> dict[str, Any] | None:
        row = await rental_row(billing, rental_id)
        return row if row["state"] == "active" else None

    row = await eventually(revived)
    assert row["started_at"] == late.ejected_at
    assert row["user_exclusive"] is False


async def test_borrows_are_shed_while_earlier_unlocks_wait_too_long(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    """Load shedding: while the pipeline cannot confirm the unlocks in flight, a new borrow is refused
    at once with 503 busy and Retry-After, before any rental or eject exists."""
    normal = billing.runtime.settings
    billing.runtime.settings = normal.model_copy(update={"max_borrows_waiting": 1})
    try:
        _, waiting_headers = user(signer)
        silent = unique("BANK")
        device.behaviours[silent] = device.silent
        waiting = asyncio.create_task(
            billing.client.post("/v1/rentals", json={"code": silent}, headers=waiting_headers)
        )
        waiters = service.waiters_of(billing.runtime)

        async def one_waiting() -> bool:
            return len(waiters) == 1

        await eventually(one_waiting)
        shed_user, shed_headers = user(signer)
        shed = await billing.client.post("/v1/rentals", json={"code": unique("BANK")}, headers=shed_headers)
        assert shed.status_code == 503, shed.text
        assert shed.json()["code"] == "busy"
        assert shed.headers["Retry-After"] == "2"
        async with billing.runtime.sessionmaker() as session:
            rows = await session.execute(text("SELECT count(*) FROM rentals WHERE user_id = :u"), {"u": shed_user})
            assert rows.scalar_one() == 0
        assert (await waiting).status_code == 504
    finally:
        billing.runtime.settings = normal
