"""Borrow flow end to end: EjectBank on Kafka -> Eject over MQTT -> result -> events on Kafka."""

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.events import EjectFailureReason
from contracts.mqtt import Eject
from contracts.regions import region_at

pytestmark = pytest.mark.integration


def entry(fleet, cabinet_id):
    return next(c for c in fleet["cabinets"] if c["cabinet_id"] == cabinet_id)


async def test_eject_by_bank_id_then_device_ok_emits_bank_ejected(service, fleet, online, tap, eject, clock):
    cab = await online("CAB-0001")
    cmd = await eject("PB-000001")
    ejected_cmd = await cab.receive()
    assert isinstance(ejected_cmd, Eject)
    assert ejected_cmd.cmd_id == str(cmd.command_id)
    assert ejected_cmd.bank_id == "PB-000001"
    assert ejected_cmd.slot == 1
    assert ejected_cmd.expires_at == int(cmd.deadline.timestamp() * 1000)
    await cab.send(
        "eject_result",
        {
            "type": "eject_result",
            "msg_id": cab.next_id(),
            "ts": clock(),
            "cmd_id": ejected_cmd.cmd_id,
            "result": "ok",
            "slot": 1,
            "bank_id": "PB-000001",
        },
    )
    ejected = await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
    assert ejected.rental_id == cmd.rental_id
    assert (ejected.bank_id, ejected.cabinet_id, ejected.slot) == ("PB-000001", "CAB-0001", 1)
    assert ejected.bank_model == "PB-5000"
    cabinet = entry(fleet, "CAB-0001")
    assert ejected.region == region_at(cabinet["lat"], cabinet["lon"])
    assert ejected.battery_pct == entry(fleet, "CAB-0001")["slots"][0]["battery_pct"]
    assert not tap.matching("device.eject.failed", command_id=cmd.command_id)


async def test_eject_by_cabinet_code_picks_the_fullest_bank(service, fleet, online, tap, eject, clock):
    cab = await online("CAB-0002")
    slots = [s for s in entry(fleet, "CAB-0002")["slots"] if s["bank_id"]]
    best = max(slots, key=lambda s: (s["battery_pct"], -s["slot"]))
    await eject("CAB-0002")
    ejected_cmd = await cab.receive()
    assert ejected_cmd.bank_id == best["bank_id"]
    assert ejected_cmd.slot == best["slot"]


async def test_low_battery_bank_fails_without_any_mqtt_command(service, fleet, online, tap, eject, clock):
    cab = await online("CAB-0001")
    cmd = await eject("PB-000002")
    failed = await tap.wait_for("device.eject.failed", command_id=cmd.command_id)
    assert failed.reason == EjectFailureReason.BANK_BATTERY_LOW
    assert failed.bank_id == "PB-000002"
    with pytest.raises(TimeoutError):
        await cab.receive(timeout=0.5)


async def test_offline_cabinet_and_unknown_code_are_refused(service, fleet, tap, eject):
    offline = await eject("PB-000001")
    unknown = await eject("NO-SUCH-CODE")
    expired = await eject("PB-000001", deadline_s=-1)
    assert (await tap.wait_for("device.eject.failed", command_id=offline.command_id)).reason == "cabinet_offline"
    assert (await tap.wait_for("device.eject.failed", command_id=unknown.command_id)).reason == "unknown_code"
    assert (await tap.wait_for("device.eject.failed", command_id=expired.command_id)).reason == "command_expired"


async def test_no_answer_fails_after_the_deadline(service, fleet, online, tap, eject, clock, database_url):
    cab = await online("CAB-0003")
    cmd = await eject("CAB-0003", deadline_s=1.5)
    ejected_cmd = await cab.receive()
    assert ejected_cmd.cmd_id == str(cmd.command_id)
    failed = await tap.wait_for("device.eject.failed", command_id=cmd.command_id, timeout=5)
    assert failed.reason == EjectFailureReason.DEVICE_NO_ANSWER
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            status = (
                await conn.execute(text("SELECT status FROM commands WHERE cmd_id = :c"), {"c": cmd.command_id})
            ).scalar_one()
    finally:
        await engine.dispose()
    assert status == "expired"


async def test_each_unanswered_command_fails_at_its_own_deadline(service, fleet, online, tap, eject):
    """The deadline alarm keeps only the earliest deadline; a later one rung meanwhile is still kept
    (the sweep reports the next one), not left to the slow fallback interval."""
    first_cab, second_cab = await online("CAB-0002"), await online("CAB-0003")
    first = await eject("CAB-0002", deadline_s=1.0)
    second = await eject("CAB-0003", deadline_s=1.6)
    await first_cab.receive()
    await second_cab.receive()
    await tap.wait_for("device.eject.failed", command_id=first.command_id, timeout=5)
    # The fallback sweep comes command_sweep_interval_s (5 s) after the first one: well after this.
    failed = await tap.wait_for("device.eject.failed", command_id=second.command_id, timeout=3)
    assert failed.reason == EjectFailureReason.DEVICE_NO_ANSWER


async def test_redelivered_command_is_not_ejected_twice(service, fleet, online, tap, eject, clock):
    cab = await online("CAB-0001")
    cmd = await eject("PB-000003")
    first = await cab.receive()
    # The same command again (a new event id, e.g. billing retried): no second eject.
    await eject("PB-000003", command_id=cmd.command_id)
    with pytest.raises(TimeoutError):
        await cab.receive(timeout=1.0)
    assert first.cmd_id == str(cmd.command_id)


async def test_device_failure_code_maps_to_reason_and_late_ok_still_reports_ejection(
    service, fleet, online, tap, eject, clock
):
    cab = await online("CAB-0001")
    cmd = await eject("PB-000004")
    ejected_cmd = await cab.receive()
    base = {
        "type": "eject_result",
        "cmd_id": ejected_cmd.cmd_id,
        "slot": ejected_cmd.slot,
        "bank_id": ejected_cmd.bank_id,
    }
    await cab.send("eject_result", base | {"msg_id": cab.next_id(), "ts": clock(), "result": "motor_fault"})
    failed = await tap.wait_for("device.eject.failed", command_id=cmd.command_id)
    assert failed.reason == EjectFailureReason.MOTOR_FAULT
    await cab.send("eject_result", base | {"msg_id": cab.next_id(), "ts": clock(), "result": "ok"})
    ejected = await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
    assert ejected.bank_id == "PB-000004"


async def lost_answer(cab, eject, tap, code):
    """An eject the cabinet carries out whose answer never arrives: device-svc fails it at its deadline."""
    cmd = await eject(code, deadline_s=1.0)
    sent = await cab.receive()
    failed = await tap.wait_for("device.eject.failed", command_id=cmd.command_id, timeout=10)
    assert failed.reason == EjectFailureReason.DEVICE_NO_ANSWER
    return cmd, sent


async def test_a_lost_eject_answer_is_inferred_when_a_later_eject_finds_the_slot_empty(
    service, fleet, online, tap, eject, clock
):
    """Issue 14 (found by `make chaos`): the eject happened, its answer was lost, the command expired and the
    rental failed; the bank is in the user's hand. The next eject of it answers `bank_not_present`: the first
    eject is reported after all, so billing revives that rental and the user can return the bank."""
    cab = await online("CAB-0003")
    first, sent = await lost_answer(cab, eject, tap, "CAB-0003")
    second = await eject(sent.bank_id)
    again = await cab.receive()
    assert again.bank_id == sent.bank_id  # device-svc still thinks the bank is in its slot
    await cab.send(
        "eject_result",
        {
            "type": "eject_result",
            "msg_id": cab.next_id(),
            "ts": clock(),
            "cmd_id": again.cmd_id,
            "result": "bank_not_present",
            "slot": again.slot,
            "bank_id": again.bank_id,
        },
    )
    ejected = await tap.wait_for("device.bank.ejected", command_id=first.command_id)
    assert (ejected.rental_id, ejected.bank_id, ejected.slot) == (first.rental_id, sent.bank_id, sent.slot)
    failed = await tap.wait_for("device.eject.failed", command_id=second.command_id)
    assert failed.reason == EjectFailureReason.BANK_NOT_PRESENT  # this borrow got nothing
    third = await eject(sent.bank_id)  # the bank is rented now: not offered again
    refused = await tap.wait_for("device.eject.failed", command_id=third.command_id)
    assert refused.reason == EjectFailureReason.BANK_NOT_AVAILABLE


async def test_a_lost_eject_answer_is_inferred_from_the_cabinets_snapshot(service, fleet, online, tap, eject, clock):
    cab = await online("CAB-0002")
    first, sent = await lost_answer(cab, eject, tap, "CAB-0002")
    slots = [
        {"slot": s["slot"]}
        if s.get("bank_id") in (None, sent.bank_id)
        else {k: v for k, v in s.items() if v is not None}
        for s in entry(fleet, "CAB-0002")["slots"]
    ]
    await cab.send("inventory", {"type": "inventory", "msg_id": cab.next_id(), "ts": clock(), "slots": slots})
    ejected = await tap.wait_for("device.bank.ejected", command_id=first.command_id)
    assert (ejected.rental_id, ejected.bank_id) == (first.rental_id, sent.bank_id)
