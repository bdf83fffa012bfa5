"""device-svc against an emulated cabinet (device_emulator) whose messages are duplicated (the same
msg_id several times, as QoS 1 redeliveries) and delayed (overtaken by newer ones): each eject,
return and snapshot counts once, and a late snapshot never undoes a newer one."""

from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.mqtt import ReturnAckResult, SlotAbnormalKind
from device_emulator import Cabinet as EmulatedCabinet
from kit.testing import eventually

pytestmark = pytest.mark.integration


def duplicates() -> float:
    return REGISTRY.get_sample_value("pb_device_messages_rejected_total", {"reason": "duplicate"}) or 0.0


async def bank_state(database_url, bank_id):
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(text("SELECT state, cabinet_id, slot_no FROM banks WHERE id = :id"), {"id": bank_id})
            ).one()
            return tuple(row)
    finally:
        await engine.dispose()


async def test_duplicated_and_delayed_cabinet_messages_change_nothing_wrong(
    service, fleet, broker, tap, eject, database_url
):
    entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == "CAB-0001")
    cab = EmulatedCabinet(
        "CAB-0001",
        entry["password"],
        broker.host,
        broker.port,
        entry["slots"],
        slot_count=entry["slot_count"],
        tls=broker.tls,
        heartbeat_s=60,
        motor_delay_s=0.0,
    )
    await cab.start()
    try:
        assert await cab.wait_online(10)
        await tap.wait_for("device.presence.changed", device_id="CAB-0001", online=True)

        # Every message three times: one eject, one return, one ack "ok" (then "duplicate").
        cab.set_faults(duplicate=3)
        dropped = duplicates()
        cmd = await eject("PB-000003")
        await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
        msg_id = await cab.return_bank("PB-000003", slot=7)
        ack = await cab.wait_ack(msg_id, timeout_s=5)
        assert ack is not None and ack.result == ReturnAckResult.OK
        returned = await tap.wait_for("device.bank.returned", bank_id="PB-000003")

        async def all_repeats_dropped():
            return duplicates() - dropped >= 4  # 2 repeats of the eject result, 2 of the return

        await eventually(all_repeats_dropped, timeout=10, what="the repeated messages dropped")
        assert len(tap.matching("device.bank.ejected", command_id=cmd.command_id)) == 1
        assert len(tap.matching("device.bank.returned", bank_id="PB-000003")) == 1
        assert int(returned.returned_at.timestamp() * 1000) > 0
        assert await bank_state(database_url, "PB-000003") == ("in_cabinet", "CAB-0001", 7)

        # A snapshot delayed in the network arrives after a newer one: the newer one stands.
        cab.set_faults(duplicate=1, delay_s=1.5)
        await cab.publish_inventory()  # still shows PB-000001 in slot 1
        cab.set_faults(delay_s=0)
        await cab.report_slot_abnormal(1, SlotAbnormalKind.REMOVED_WITHOUT_UNLOCK)
        await cab.publish_inventory()  # slot 1 empty: the bank is missing

        async def missing():
            state = await bank_state(database_url, "PB-000001")
            return state if state[0] == "maintenance" else None

        assert await eventually(missing, timeout=10, what="PB-000001 shown missing") == ("maintenance", None, None)
        # The late snapshot is fed to the data team (not applied: no rentable count) and changes nothing.
        late = await tap.wait_for(
            "device.telemetry.reported", timeout=10, device_id="CAB-0001", banks_present=6, banks_rentable=None
        )
        assert late.reported_at < datetime.now(UTC)
        assert await bank_state(database_url, "PB-000001") == ("maintenance", None, None)
        assert await bank_state(database_url, "PB-000003") == ("in_cabinet", "CAB-0001", 7)
    finally:
        await cab.stop()
