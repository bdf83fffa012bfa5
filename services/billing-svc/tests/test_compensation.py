"""Compensation and correctness (clause 7.1), debt and disputes, against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from billing_svc.rentals import service
from billing_svc.rentals.service import charge_id_for
from contracts import Envelope, event_adapter
from contracts.events import (
    BankEjected,
    BankReturned,
    ChargeFailed,
    ChargeRequested,
    ChargeSettled,
    DebtWaived,
    EjectBank,
    EjectFailureReason,
    RefundRequested,
)
from kit.auth import TokenSigner
from kit.db import unit_of_work

if TYPE_CHECKING:
    from conftest import Billing, FakeDevice

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def user(signer: TokenSigner) -> tuple[str, dict[str, str]]:
    user_id = str(uuid.uuid4())
    return user_id, {"Authorization": f"Bearer {signer.issue(user_id)}"}


def support(signer: TokenSigner, role: str = "support") -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue('agent-' + role, kind='admin', roles=[role])}"}


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


async def in_state(billing: Billing, rental_id: str, state: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        row = await rental_row(billing, rental_id)
        return row if row["state"] == state else None

    result: dict[str, Any] = await eventually(check)
    return result


async def outbox(billing: Billing, rental_id: str) -> list[Envelope]:
    async with billing.runtime.sessionmaker() as session:
        payloads = (await session.execute(text("SELECT payload FROM outbox ORDER BY id"))).scalars().all()
    envelopes = [event_adapter.validate_json(bytes(p)) for p in payloads]
    return [e for e in envelopes if str(getattr(e.data, "rental_id", "")) == rental_id]


def of_type(envelopes: list[Envelope], event_type: str) -> list[Envelope]:
    return [e for e in envelopes if e.type == event_type]


async def borrow_active(billing: Billing, device: FakeDevice, headers: dict[str, str]) -> dict[str, Any]:
    bank = unique("BANK")
    device.behaviours[bank] = device.ejects(bank, unique("CAB"), slot=3)
    response = await billing.client.post("/v1/rentals", json={"code": bank}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def returned(bank_id: str, returned_at: datetime, report_id: str | None = None) -> BankReturned:
    return BankReturned(
        report_id=report_id or unique("RPT"),
        bank_id=bank_id,
        cabinet_id="CAB-RETURN",
        slot=5,
        battery_pct=40,
        returned_at=returned_at,
        device_reported_at=returned_at,
        received_at=datetime.now(UTC),
    )


async def command_for(device: FakeDevice, code: str) -> EjectBank:
    async def found() -> EjectBank | None:
        return next((c for c in device.commands if c.code == code), None)

    command: EjectBank = await eventually(found)
    return command


async def ended_rental(
    billing: Billing, device: FakeDevice, headers: dict[str, str], minutes: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    body = await borrow_active(billing, device, headers)
    started = datetime.fromisoformat(body["started_at"])
    await device.emit(returned(body["bank_id"], started + timedelta(minutes=minutes)), key=body["bank_id"])
    return body, await in_state(billing, body["rental_id"], "ended")


async def payment_outcome(device: FakeDevice, row: dict[str, Any], *, settled: bool) -> None:
    common = {"charge_id": row["charge_id"], "rental_id": row["id"], "user_id": row["user_id"]}
    data: Any
    if settled:
        data = ChargeSettled(**common, amount_fen=row["fee_fen"], balance_fen=0, settled_at=datetime.now(UTC))
    else:
        data = ChargeFailed(**common, amount_fen=row["fee_fen"], reason="insufficient_balance")
    await device.emit(data, key=str(row["user_id"]))


# ---- a return that overtakes the eject ------------------------------------------------------


async def test_a_return_reported_before_the_eject_event_still_ends_the_rental(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    bank = unique("BANK")
    device.behaviours[bank] = device.silent
    borrow = asyncio.create_task(billing.client.post("/v1/rentals", json={"code": bank}, headers=headers))
    command = await command_for(device, bank)
    ejected_at = datetime.now(UTC)
    returned_at = ejected_at + timedelta(minutes=40)

    report = returned(bank, returned_at)
    await device.emit(report, key=bank)

    async def stored() -> bool:
        async with billing.runtime.sessionmaker() as session:
            n = (
                await session.execute(text("SELECT count(*) FROM unmatched_returns WHERE bank_id = :b"), {"b": bank})
            ).scalar_one()
        return n == 1

    await eventually(stored)
    eject = BankEjected(
        command_id=command.command_id,
        rental_id=command.rental_id,
        bank_id=bank,
        cabinet_id="CAB-START",
        slot=2,
        battery_pct=90,
        ejected_at=ejected_at,
    )
    await device.emit(eject, key="CAB-START")
    response = await borrow
    assert response.status_code == 201, response.text
    rental_id = str(command.rental_id)
    row = await in_state(billing, rental_id, "ended")
    assert row["started_at"] == ejected_at
    assert row["ended_at"] == returned_at
    assert row["fee_fen"] == 300
    assert row["returned_report_id"] == report.report_id
    events = await outbox(billing, rental_id)
    assert len(of_type(events, "billing.rental.started")) == 1
    assert len(of_type(events, "billing.rental.ended")) == 1
    assert len(of_type(events, "billing.charge.requested")) == 1
    async with billing.runtime.sessionmaker() as session:
        matched = (
            await session.execute(
                text("SELECT rental_id FROM unmatched_returns WHERE report_id = :r"), {"r": report.report_id}
            )
        ).scalar_one()
    assert str(matched) == rental_id


async def test_an_old_return_does_not_end_a_later_rental_of_the_bank(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    bank = unique("BANK")
    await device.emit(returned(bank, datetime.now(UTC) - timedelta(minutes=5)), key=bank)

    async def stored() -> bool:
        async with billing.runtime.sessionmaker() as session:
            n = (
                await session.execute(text("SELECT count(*) FROM unmatched_returns WHERE bank_id = :b"), {"b": bank})
            ).scalar_one()
        return n == 1

    await eventually(stored)
    _, headers = user(signer)
    device.behaviours[bank] = device.ejects(bank, "CAB")
    response = await billing.client.post("/v1/rentals", json={"code": bank}, headers=headers)
    assert response.status_code == 201, response.text
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.reconcile_returns(session, billing.runtime) == 0
    assert (await rental_row(billing, response.json()["rental_id"]))["state"] == "active"


async def test_reconciliation_closes_a_rental_whose_bank_is_back(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    """The return consumer stored a report while the eject consumer was activating the rental."""
    _, headers = user(signer)
    body = await borrow_active(billing, device, headers)
    started = datetime.fromisoformat(body["started_at"])
    returned_at = started + timedelta(minutes=70)
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        await session.execute(
            text(
                "INSERT INTO unmatched_returns (report_id, bank_id, cabinet_id, returned_at, received_at) "
                "VALUES (:r, :b, 'CAB-INV', :at, now())"
            ),
            {"r": unique("INV"), "b": body["bank_id"], "at": returned_at},
        )
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.reconcile_returns(session, billing.runtime) == 1
    row = await rental_row(billing, body["rental_id"])
    assert row["state"] == "ended"
    assert row["ended_at"] == returned_at
    assert row["return_cabinet_id"] == "CAB-INV"
    assert row["fee_fen"] == 450
    assert len(of_type(await outbox(billing, body["rental_id"]), "billing.charge.requested")) == 1
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        assert await service.reconcile_returns(session, billing.runtime) == 0


async def test_return_and_eject_racing_in_both_consumers_end_the_rental_once(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    for _ in range(5):
        _, headers = user(signer)
        bank = unique("BANK")
        device.behaviours[bank] = device.silent
        borrow = asyncio.create_task(billing.client.post("/v1/rentals", json={"code": bank}, headers=headers))
        command = await command_for(device, bank)
        ejected_at = datetime.now(UTC)
        eject = BankEjected(
            command_id=command.command_id,
            rental_id=command.rental_id,
            bank_id=bank,
            cabinet_id="CAB-START",
            slot=2,
            battery_pct=90,
            ejected_at=ejected_at,
        )
        await asyncio.gather(
            device.emit(returned(bank, ejected_at + timedelta(minutes=20)), key=bank),
            device.emit(eject, key="CAB-START"),
        )
        await borrow
        rental_id = str(command.rental_id)

        async def closed(rid: str = rental_id) -> bool:
            async with unit_of_work(billing.runtime.sessionmaker) as session:
                await service.reconcile_returns(session, billing.runtime)
            return (await rental_row(billing, rid))["state"] == "ended"

        await eventually(closed)
        row = await rental_row(billing, rental_id)
        assert row["fee_fen"] == 150
        assert len(of_type(await outbox(billing, rental_id), "billing.charge.requested")) == 1


# ---- a late eject for a failed rental -------------------------------------------------------


async def test_a_late_eject_after_a_failed_answer_makes_the_rental_active_at_the_device_time(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    bank = unique("BANK")
    device.behaviours[bank] = device.fails(EjectFailureReason.COMMAND_EXPIRED)
    response = await billing.client.post("/v1/rentals", json={"code": bank}, headers=headers)
    assert response.status_code == 502, response.text
    rental_id = response.json()["rental_id"]
    command = await command_for(device, bank)
    ejected_at = datetime.now(UTC)
    late = BankEjected(
        command_id=command.command_id,
        rental_id=command.rental_id,
        bank_id=bank,
        cabinet_id="CAB-LATE",
        slot=4,
        battery_pct=80,
        ejected_at=ejected_at,
    )
    envelope = await device.emit(late, key="CAB-LATE")
    await device.send(envelope)  # twice: still one start
    row = await in_state(billing, rental_id, "active")
    assert row["started_at"] == ejected_at
    assert row["revived_at"] is not None
    assert row["failure_reason"] is None
    current = await billing.client.get("/v1/rentals/current", headers=headers)
    assert current.status_code == 200
    assert current.json()["rental_id"] == rental_id

    # The user was told no bank came out and nothing is charged: the revived rental stays free.
    await device.emit(returned(bank, ejected_at + timedelta(minutes=31)), key=bank)
    row = await in_state(billing, rental_id, "settled")
    assert row["fee_fen"] == 0
    assert row["charge_id"] is None
    events = await outbox(billing, rental_id)
    assert not of_type(events, "billing.charge.requested")
    [started_event] = of_type(events, "billing.rental.started")
    assert started_event.data.after_failure is True  # type: ignore[union-attr]
    assert [e.type for e in events if e.type.startswith("billing.rental")] == [
        "billing.rental.failed",
        "billing.rental.started",
        "billing.rental.ended",
    ]


async def test_a_late_eject_when_the_user_already_rents_another_bank_still_counts(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    bank = unique("BANK")
    device.behaviours[bank] = device.fails(EjectFailureReason.COMMAND_EXPIRED)
    failed = await billing.client.post("/v1/rentals", json={"code": bank}, headers=headers)
    assert failed.status_code == 502
    other = await borrow_active(billing, device, headers)
    command = await command_for(device, bank)
    late = BankEjected(
        command_id=command.command_id,
        rental_id=command.rental_id,
        bank_id=bank,
        cabinet_id="CAB-LATE",
        slot=4,
        battery_pct=80,
        ejected_at=datetime.now(UTC),
    )
    await device.emit(late, key="CAB-LATE")
    row = await in_state(billing, failed.json()["rental_id"], "active")
    assert row["user_exclusive"] is False
    assert (await rental_row(billing, other["rental_id"]))["state"] == "active"


# ---- unpaid debt and manual payment ---------------------------------------------------------


async def test_unpaid_debt_blocks_borrowing_until_paid_manually(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    body, row = await ended_rental(billing, device, headers, minutes=10)
    rental_id = body["rental_id"]
    await payment_outcome(device, row, settled=False)
    await in_state(billing, rental_id, "unpaid")

    refused = await billing.client.post("/v1/rentals", json={"code": unique("BANK")}, headers=headers)
    assert refused.status_code == 402
    assert refused.json()["code"] == "unpaid_debt"
    assert refused.json()["debt_fen"] == 150

    _, stranger = user(signer)
    assert (await billing.client.post(f"/v1/rentals/{rental_id}/payments", headers=stranger)).status_code == 404
    paid = await billing.client.post(f"/v1/rentals/{rental_id}/payments", headers=headers)
    assert paid.status_code == 202, paid.text
    assert paid.json()["state"] == "ended"
    again = await billing.client.post(f"/v1/rentals/{rental_id}/payments", headers=headers)
    assert again.status_code == 409
    assert again.json()["code"] == "payment_pending"

    charges = of_type(await outbox(billing, rental_id), "billing.charge.requested")
    assert [c.data.charge_id for c in charges] == [  # type: ignore[union-attr]
        charge_id_for(uuid.UUID(rental_id)),
        charge_id_for(uuid.UUID(rental_id), 1),
    ]
    # The outcome of the first (failed) charge again changes nothing; the new one settles.
    await payment_outcome(device, row, settled=False)
    await payment_outcome(device, await rental_row(billing, rental_id), settled=True)
    await in_state(billing, rental_id, "settled")
    done = await billing.client.post(f"/v1/rentals/{rental_id}/payments", headers=headers)
    assert done.status_code == 409
    assert done.json()["code"] == "nothing_to_pay"
    await borrow_active(billing, device, headers)


async def test_a_debt_paid_through_a_channel_settles_the_failed_attempt_even_after_a_newer_one(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    """asset-credit settles the attempt that failed when the user pays the debt through a channel; the user may
    have asked billing to pay from the wallet meanwhile (a newer attempt, which then fails
    `rental_already_charged`): the rental is paid either way, and borrowing is open again."""
    _, headers = user(signer)
    body, row = await ended_rental(billing, device, headers, minutes=10)
    rental_id = body["rental_id"]
    await payment_outcome(device, row, settled=False)
    await in_state(billing, rental_id, "unpaid")
    assert (await billing.client.post(f"/v1/rentals/{rental_id}/payments", headers=headers)).status_code == 202
    newer = await in_state(billing, rental_id, "ended")
    assert newer["charge_id"] != row["charge_id"]

    await payment_outcome(device, row, settled=True)  # the first attempt, paid through the channel
    await in_state(billing, rental_id, "settled")
    late = ChargeFailed(
        charge_id=newer["charge_id"],
        rental_id=newer["id"],
        user_id=newer["user_id"],
        amount_fen=newer["fee_fen"],
        reason="rental_already_charged",
    )
    await device.emit(late, key=str(newer["user_id"]))
    await payment_outcome(device, {**row, "charge_id": uuid.uuid4()}, settled=True)  # not one of its attempts
    await borrow_active(billing, device, headers)
    assert (await rental_row(billing, rental_id))["state"] == "settled"


# ---- disputes and corrections ---------------------------------------------------------------


async def test_dispute_and_an_audited_correction_refund_once(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    user_id, headers = user(signer)
    body, row = await ended_rental(billing, device, headers, minutes=50)
    rental_id = body["rental_id"]
    assert row["fee_fen"] == 300
    await payment_outcome(device, row, settled=True)
    await in_state(billing, rental_id, "settled")

    opened = await billing.client.post(
        f"/v1/rentals/{rental_id}/disputes", json={"reason": "I returned it after 20 minutes"}, headers=headers
    )
    assert opened.status_code == 201, opened.text
    dispute_id = opened.json()["dispute_id"]
    second = await billing.client.post(f"/v1/rentals/{rental_id}/disputes", json={"reason": "again"}, headers=headers)
    assert second.status_code == 409
    assert second.json()["code"] == "dispute_open"
    _, stranger = user(signer)
    foreign = await billing.client.post(f"/v1/rentals/{rental_id}/disputes", json={"reason": "x"}, headers=stranger)
    assert foreign.status_code == 404

    # Users cannot see or correct disputes; support can, and sees the user's rentals.
    assert (await billing.client.get("/v1/admin/disputes", headers=headers)).status_code == 403
    assert (await billing.client.get(f"/v1/admin/users/{user_id}/rentals", headers=headers)).status_code == 403
    rentals = await billing.client.get(f"/v1/admin/users/{user_id}/rentals", headers=support(signer))
    assert [(r["rental_id"], r["fee_fen"]) for r in rentals.json()["items"]] == [(rental_id, 300)]
    one = await billing.client.get(f"/v1/admin/rentals/{rental_id}", headers=support(signer))
    assert one.json()["state"] == "settled" and one.json()["paid_fen"] == 300
    listed = await billing.client.get("/v1/admin/disputes", headers=support(signer))
    assert [d["dispute_id"] for d in listed.json()["items"]] == [dispute_id]

    path = f"/v1/admin/rentals/{rental_id}/corrections"
    correction = {"note": "cabinet log shows return at +20 min", "ended_at": None, "dispute_id": dispute_id}
    started = datetime.fromisoformat(body["started_at"])
    correction["ended_at"] = (started + timedelta(minutes=20)).isoformat()
    agent = {**support(signer, "finance"), "Idempotency-Key": "fix-1"}
    assert (await billing.client.post(path, json=correction, headers=support(signer))).status_code == 400
    first = await billing.client.post(path, json=correction, headers=agent)
    assert first.status_code == 201, first.text
    out = first.json()
    assert out["refund_fen"] == 150
    assert out["before"]["fee_fen"] == 300
    assert out["after"]["fee_fen"] == 150
    assert out["actor"] == "agent-finance"
    replay = await billing.client.post(path, json=correction, headers=agent)
    assert replay.status_code == 201
    assert replay.json()["correction_id"] == out["correction_id"]
    other = await billing.client.post(path, json={**correction, "note": "different"}, headers=agent)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    raise_fee = await billing.client.post(
        path, json={"note": "more", "fee_fen": 1000}, headers={**agent, "Idempotency-Key": "fix-2"}
    )
    assert raise_fee.status_code == 422
    assert raise_fee.json()["code"] == "invalid_correction"

    row = await rental_row(billing, rental_id)
    assert row["fee_fen"] == 150
    assert row["state"] == "settled"
    refunds = of_type(await outbox(billing, rental_id), "billing.refund.requested")
    assert len(refunds) == 1
    refund = refunds[0].data
    assert isinstance(refund, RefundRequested)
    assert refund.amount_fen == 150
    assert str(refund.user_id) == user_id
    assert str(refund.refund_id) == out["refund_id"]
    disputes = (await billing.client.get(f"/v1/rentals/{rental_id}/disputes", headers=headers)).json()["items"]
    assert disputes[0]["state"] == "resolved"
    # The support queue (notify-svc) hears of the dispute and of its outcome, through the outbox.
    opened = of_type(await outbox(billing, rental_id), "billing.dispute.opened")
    resolved = of_type(await outbox(billing, rental_id), "billing.dispute.resolved")
    assert [str(e.data.dispute_id) for e in opened] == [disputes[0]["dispute_id"]]  # type: ignore[union-attr]
    assert [e.data.outcome for e in resolved] == ["corrected"]  # type: ignore[union-attr]
    audit = await billing.client.get(path, headers=support(signer))
    assert [c["correction_id"] for c in audit.json()["items"]] == [out["correction_id"]]

    # The audit is append-only.
    with pytest.raises(DBAPIError, match="append-only"):
        async with unit_of_work(billing.runtime.sessionmaker) as session:
            await session.execute(text("UPDATE rental_corrections SET note = 'edited'"))


async def test_support_ends_an_active_rental_and_waives_an_unpaid_one(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    body = await borrow_active(billing, device, headers)
    rental_id = body["rental_id"]
    ended_at = datetime.fromisoformat(body["started_at"]) + timedelta(seconds=1)
    agent = {**support(signer), "Idempotency-Key": unique("k")}
    path = f"/v1/admin/rentals/{rental_id}/corrections"
    bad = await billing.client.post(path, json={"note": "x", "fee_fen": 0}, headers=agent)
    assert bad.status_code == 409
    assert bad.json()["code"] == "not_correctable"
    await asyncio.sleep(max(0.0, (ended_at - datetime.now(UTC)).total_seconds()) + 0.1)
    response = await billing.client.post(
        path, json={"note": "bank found in the cabinet", "ended_at": ended_at.isoformat()}, headers=agent
    )
    assert response.status_code == 201, response.text
    row = await in_state(billing, rental_id, "ended")
    assert row["fee_fen"] == 150
    await payment_outcome(device, row, settled=False)
    await in_state(billing, rental_id, "unpaid")
    waive = await billing.client.post(
        path, json={"note": "goodwill", "fee_fen": 0}, headers={**support(signer), "Idempotency-Key": unique("k")}
    )
    assert waive.status_code == 201, waive.text
    assert waive.json()["refund_fen"] == 0
    row = await rental_row(billing, rental_id)
    assert row["state"] == "settled"
    assert row["fee_fen"] == 0
    assert not of_type(await outbox(billing, rental_id), "billing.refund.requested")
    # asset-credit-svc hears of the waiver (it no longer counts the rental as owing).
    waived = of_type(await outbox(billing, rental_id), "billing.debt.waived")
    assert len(waived) == 1
    assert isinstance(waived[0].data, DebtWaived)
    assert waived[0].data.waived_fen == 150
    assert str(waived[0].data.user_id) == str(row["user_id"])
    await borrow_active(billing, device, headers)  # no debt left


async def test_a_discounted_charge_shows_its_breakdown_and_a_correction_refunds_only_money(
    billing: Billing, device: FakeDevice, signer: TokenSigner
) -> None:
    _, headers = user(signer)
    body, row = await ended_rental(billing, device, headers, minutes=50)
    rental_id = body["rental_id"]
    assert row["fee_fen"] == 300
    requested = of_type(await outbox(billing, rental_id), "billing.charge.requested")
    assert len(requested) == 1
    charge = requested[0].data
    assert isinstance(charge, ChargeRequested)
    assert charge.duration_seconds == 50 * 60  # what a card of free minutes needs
    assert charge.started_at == datetime.fromisoformat(body["started_at"])
    assert charge.ended_at == charge.started_at + timedelta(minutes=50)

    settled = ChargeSettled(
        charge_id=row["charge_id"],
        rental_id=row["id"],
        user_id=row["user_id"],
        amount_fen=300,
        balance_fen=900,
        settled_at=datetime.now(UTC),
        coupon_fen=150,
        red_packet_fen=50,
        paid_fen=100,
    )
    await device.emit(settled, key=str(row["user_id"]))
    await in_state(billing, rental_id, "settled")
    shown = (await billing.client.get(f"/v1/rentals/{rental_id}", headers=headers)).json()
    assert (shown["fee_fen"], shown["coupon_fen"], shown["red_packet_fen"], shown["card_fen"]) == (300, 150, 50, 0)
    assert (shown["discount_fen"], shown["paid_fen"]) == (200, 100)
    history = (await billing.client.get("/v1/rentals", headers=headers)).json()["items"]
    assert [(r["rental_id"], r["discount_fen"], r["paid_fen"]) for r in history] == [(rental_id, 200, 100)]

    # A lower fee of 250: the assets still cover 200, so the user's money pays 50 and gets 50 back.
    path = f"/v1/admin/rentals/{rental_id}/corrections"
    agent = {**support(signer), "Idempotency-Key": unique("k")}
    first = await billing.client.post(path, json={"note": "cabinet clock", "fee_fen": 250}, headers=agent)
    assert first.status_code == 201, first.text
    assert first.json()["refund_fen"] == 50
    # Down to 100, below what the assets covered: the rest of the money comes back, never more.
    agent = {**support(signer), "Idempotency-Key": unique("k")}
    second = await billing.client.post(path, json={"note": "goodwill", "fee_fen": 100}, headers=agent)
    assert second.json()["refund_fen"] == 50
    row = await rental_row(billing, rental_id)
    assert (row["fee_fen"], row["paid_fen"], row["state"]) == (100, 0, "settled")
    refunds = [e.data for e in of_type(await outbox(billing, rental_id), "billing.refund.requested")]
    assert [r.amount_fen for r in refunds if isinstance(r, RefundRequested)] == [50, 50]


async def test_bad_input_is_a_4xx(billing: Billing, signer: TokenSigner) -> None:
    _, headers = user(signer)
    agent = {**support(signer), "Idempotency-Key": "k"}
    missing = f"/v1/admin/rentals/{uuid.uuid4()}/corrections"
    assert (await billing.client.post(missing, json={"note": "x", "fee_fen": 1}, headers=agent)).status_code == 404
    assert (await billing.client.post(missing, json={"note": "x"}, headers=agent)).status_code == 422
    assert (await billing.client.post(missing, json={"note": "x", "fee_fen": -1}, headers=agent)).status_code == 422
    bad_id = "/v1/rentals/not-a-uuid/disputes"
    assert (await billing.client.post(bad_id, json={"reason": "x"}, headers=headers)).status_code == 422
    pay_missing = f"/v1/rentals/{uuid.uuid4()}/payments"
    assert (await billing.client.post(pay_missing, headers=headers)).status_code == 404
    reject = f"/v1/admin/disputes/{uuid.uuid4()}/reject"
    assert (await billing.client.post(reject, json={"note": "n"}, headers=support(signer))).status_code == 404


# ---- credit and deposit rules from asset-credit-svc -----------------------------------------


async def test_credit_and_deposit_refusals_block_borrowing(
    billing: Billing, device: FakeDevice, wallets: Any, signer: TokenSigner
) -> None:
    for refusal, status in (("credit_too_low", 403), ("deposit_required", 402), ("something_new", 403)):
        user_id, headers = user(signer)
        wallets.refusals[user_id] = refusal
        response = await billing.client.post("/v1/rentals", json={"code": unique("BANK")}, headers=headers)
        assert response.status_code == status, response.text
        assert response.json()["code"] == (refusal if refusal != "something_new" else "borrow_refused")
