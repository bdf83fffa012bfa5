"""Returns: BankReturned on device.returns.v1 and a ReturnAck to the cabinet; duplicates and skewed clocks."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from contracts.mqtt import ReturnAck

pytestmark = pytest.mark.integration


async def rent(cab, eject, tap, clock, bank_id):
    cmd = await eject(bank_id)
    command = await cab.receive()
    await cab.send(
        "eject_result",
        {"type": "eject_result", "msg_id": cab.next_id(), "ts": clock(), "cmd_id": command.cmd_id, "result": "ok"},
    )
    return await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)


def report(cab, ts, slot=7, bank_id="PB-000001", msg_id=None, battery=55):
    return {
        "type": "return",
        "msg_id": msg_id or cab.next_id(),
        "ts": ts,
        "slot": slot,
        "bank_id": bank_id,
        "battery_pct": battery,
    }


async def test_return_emits_bank_returned_and_acks(service, online, eject, tap, clock, signer):
    cab = await online("CAB-0001")
    ejected = await rent(cab, eject, tap, clock, "PB-000001")
    returned_ts = clock()
    msg = report(cab, returned_ts)
    await cab.send("return", msg)
    ack = await cab.receive()
    assert ack == ReturnAck(ref_msg_id=msg["msg_id"], result="ok")
    returned = await tap.wait_for("device.bank.returned", report_id=f"CAB-0001/{msg['msg_id']}")
    assert (returned.bank_id, returned.cabinet_id, returned.slot, returned.battery_pct) == (
        "PB-000001",
        "CAB-0001",
        7,
        55,
    )
    assert returned.clock_adjusted is False
    assert int(returned.returned_at.timestamp() * 1000) == returned_ts
    assert returned.region is not None and returned.region.division_code == "440304"  # the seed is in Futian
    assert returned.region.cell is not None and returned.region == ejected.region
    assert returned.returned_at >= ejected.ejected_at
    token = signer.issue("00000000-0000-0000-0000-000000000001")
    bank = (await service.get("/v1/banks/PB-000001", headers={"Authorization": f"Bearer {token}"})).json()
    assert (bank["state"], bank["cabinet_id"], bank["slot"], bank["battery_pct"]) == ("in_cabinet", "CAB-0001", 7, 55)


async def test_same_return_twice_gives_one_bank_returned(service, online, eject, tap, clock):
    cab = await online("CAB-0001")
    await rent(cab, eject, tap, clock, "PB-000003")
    msg = report(cab, clock(), bank_id="PB-000003")
    await cab.send("return", msg)
    assert (await cab.receive()).result == "ok"
    await tap.wait_for("device.bank.returned", bank_id="PB-000003")
    await cab.send("return", msg)  # replay: same msg_id
    assert (await cab.receive()).result == "duplicate"
    await cab.send("return", report(cab, clock(), bank_id="PB-000003"))  # same event, new msg_id
    assert (await cab.receive()).result == "duplicate"
    await asyncio.sleep(0.5)  # room for a wrong second event to arrive
    assert len(tap.matching("device.bank.returned", bank_id="PB-000003")) == 1


async def test_skewed_device_clock_uses_server_time(service, online, eject, tap, clock):
    cab = await online("CAB-0002")
    await rent(cab, eject, tap, clock, "PB-000007")
    before = datetime.now(UTC)
    msg = report(cab, clock(timedelta(days=1)), bank_id="PB-000007", slot=8)
    await cab.send("return", msg)
    assert (await cab.receive()).result == "ok"
    returned = await tap.wait_for("device.bank.returned", report_id=f"CAB-0002/{msg['msg_id']}")
    assert returned.clock_adjusted is True
    assert returned.returned_at == returned.received_at
    assert before <= returned.returned_at <= datetime.now(UTC)
    assert returned.device_reported_at > datetime.now(UTC) + timedelta(hours=23)


async def test_device_time_before_the_eject_uses_server_time(service, online, eject, tap, clock):
    cab = await online("CAB-0001")
    await rent(cab, eject, tap, clock, "PB-000005")
    msg = report(cab, clock(timedelta(hours=-2)), bank_id="PB-000005", slot=8)
    await cab.send("return", msg)
    assert (await cab.receive()).result == "ok"
    returned = await tap.wait_for("device.bank.returned", report_id=f"CAB-0001/{msg['msg_id']}")
    assert returned.clock_adjusted is True
    assert returned.returned_at == returned.received_at


async def test_unknown_bank_is_acked_unknown_and_counted(service, online, tap, clock):
    cab = await online("CAB-0003")
    await cab.send("return", report(cab, clock(), bank_id="PB-999999"))
    assert (await cab.receive()).result == "unknown_bank"
    rejected = await tap.wait_for("device.message.rejected", device_id="CAB-0003", reason="unknown_bank")
    assert rejected.mqtt_topic == "pb/v1/devices/CAB-0003/up/return"
    assert not tap.matching("device.bank.returned", bank_id="PB-999999")
