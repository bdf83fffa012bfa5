"""Cabinet reports are applied in device-time order (a late or out-of-order snapshot or heartbeat
never overwrites newer state), and banks put in a manual state by operations stay in it whatever
the cabinet reports, until operations clear it."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.integration

OPS = {"kind": "admin", "roles": ["operator"]}


def auth(signer):
    return {"Authorization": f"Bearer {signer.issue('00000000-0000-0000-0000-000000000009', **OPS)}"}


def inventory(cab, ts, banks):
    """`banks`: {slot: (bank_id, battery_pct) or (bank_id, battery_pct, fault)}; slots 1-8, others empty."""
    slots = []
    for n in range(1, 9):
        entry = banks.get(n)
        if entry is None:
            slots.append({"slot": n})
        else:
            slot = {"slot": n, "bank_id": entry[0], "battery_pct": entry[1]}
            if len(entry) > 2:
                slot["fault"] = entry[2]
            slots.append(slot)
    return {"type": "inventory", "msg_id": cab.next_id(), "ts": ts, "slots": slots}


FULL = {n: (f"PB-{n:06d}", 90) for n in range(1, 7)}


def ms(value):
    return int(value.timestamp() * 1000)


async def rows(database_url, sql, **params):
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).all()
    finally:
        await engine.dispose()


async def bank_row(database_url, bank_id):
    found = await rows(
        database_url,
        "SELECT state, cabinet_id, slot_no, battery_pct, operator_hold FROM banks WHERE id = :id",
        id=bank_id,
    )
    return tuple(found[0])


async def inventory_applied(tap, ts):
    """The telemetry event of the snapshot taken at device time `ts` (every snapshot feeds it)."""
    at = datetime.fromtimestamp(ts / 1000, UTC)
    return await tap.wait_for("device.telemetry.reported", device_id="CAB-0001", reported_at=at)


async def test_an_older_snapshot_or_heartbeat_arriving_late_changes_nothing(
    service, online, tap, clock, database_url, signer
):
    cab = await online("CAB-0001")
    t = clock()
    newer = inventory(cab, t + 2000, FULL | {1: ("PB-000001", 50), 2: ("PB-000002", 11)})
    older = inventory(cab, t + 1000, {n: b for n, b in FULL.items() if n != 1} | {2: ("PB-000002", 99)})
    await cab.send("inventory", newer)
    applied = await inventory_applied(tap, t + 2000)
    assert applied.banks_rentable is not None
    await cab.send("inventory", older)  # delayed in the network, or handled after the newer one elsewhere
    late = await inventory_applied(tap, t + 1000)
    assert (late.banks_present, late.banks_rentable) == (5, None)  # in the feed, not applied
    assert await bank_row(database_url, "PB-000001") == ("in_cabinet", "CAB-0001", 1, 50, False)
    assert await bank_row(database_url, "PB-000002") == ("in_cabinet", "CAB-0001", 2, 11, False)
    slot1 = await rows(database_url, "SELECT bank_id FROM slots WHERE cabinet_id = 'CAB-0001' AND slot_no = 1")
    assert slot1[0][0] == "PB-000001"

    # Heartbeats likewise: the signal reading of the newest device time stays.
    await cab.send("heartbeat", {"type": "heartbeat", "msg_id": cab.next_id(), "ts": t + 5000, "rssi_dbm": -50})
    await cab.send("heartbeat", {"type": "heartbeat", "msg_id": cab.next_id(), "ts": t + 4000, "rssi_dbm": -90})
    await tap.wait_for("device.telemetry.reported", device_id="CAB-0001", rssi_dbm=-90)
    assert (await rows(database_url, "SELECT rssi_dbm FROM cabinets WHERE id = 'CAB-0001'"))[0][0] == -50


async def test_a_snapshot_taken_before_a_return_keeps_the_returned_bank(
    service, online, eject, tap, clock, database_url
):
    cab = await online("CAB-0001")
    cmd = await eject("PB-000003")
    command = await cab.receive()
    result = {"type": "eject_result", "msg_id": cab.next_id(), "ts": clock(), "cmd_id": command.cmd_id, "result": "ok"}
    await cab.send("eject_result", result)
    await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
    t = clock()
    returned = {"type": "return", "msg_id": cab.next_id(), "ts": t + 2000, "slot": 7, "bank_id": "PB-000003"}
    await cab.send("return", returned)
    await tap.wait_for("device.bank.returned", bank_id="PB-000003")
    # Newer than any snapshot so far, but taken before the return: slot 7 still empty, bank 3 out.
    before_return = inventory(cab, t + 1000, {n: b for n, b in FULL.items() if n != 3})
    await cab.send("inventory", before_return)
    await inventory_applied(tap, t + 1000)
    assert (await bank_row(database_url, "PB-000003"))[:3] == ("in_cabinet", "CAB-0001", 7)
    slot7 = await rows(database_url, "SELECT bank_id FROM slots WHERE cabinet_id = 'CAB-0001' AND slot_no = 7")
    assert slot7[0][0] == "PB-000003"


async def test_manual_states_survive_inventories_until_operations_clear_them(
    service, online, tap, clock, database_url, signer
):
    cab = await online("CAB-0001")
    headers = auth(signer)
    for bank_id, state in (("PB-000004", "maintenance"), ("PB-000005", "faulty"), ("PB-000006", "lost")):
        resp = await service.post(
            f"/v1/ops/banks/{bank_id}/state", json={"state": state, "reason": "field check"}, headers=headers
        )
        assert resp.status_code == 200, resp.text
    # The cabinet still has them all (bank 4 moved to slot 8), without any fault; bank 2 is gone.
    t = clock() + 1000
    snapshot = {n: b for n, b in FULL.items() if n not in (2, 4)} | {8: ("PB-000004", 80)}
    await cab.send("inventory", inventory(cab, t, snapshot))
    await inventory_applied(tap, t)
    assert await bank_row(database_url, "PB-000004") == ("maintenance", "CAB-0001", 8, 80, True)
    assert await bank_row(database_url, "PB-000005") == ("faulty", "CAB-0001", 5, 90, True)
    assert await bank_row(database_url, "PB-000006") == ("lost", "CAB-0001", 6, 90, True)
    # States the platform set itself are not held: bank 2, missing, went to maintenance and comes
    # back into service when a cabinet has it again.
    assert (await bank_row(database_url, "PB-000002"))[:2] == ("maintenance", None)
    await cab.send("inventory", inventory(cab, t + 1000, snapshot | {2: ("PB-000002", 70)}))
    await inventory_applied(tap, t + 1000)
    assert await bank_row(database_url, "PB-000002") == ("in_cabinet", "CAB-0001", 2, 70, False)
    assert (await bank_row(database_url, "PB-000004"))[0] == "maintenance"

    # Operations clear the hold: the bank is in service, and cabinet reports drive it again.
    resp = await service.post(
        "/v1/ops/banks/PB-000004/state", json={"state": "in_cabinet", "reason": "checked"}, headers=headers
    )
    assert (resp.status_code, resp.json()["state"], resp.json()["slot"]) == (200, "in_cabinet", 8)
    t2 = ms(datetime.now(UTC) + timedelta(seconds=3))
    await cab.send("inventory", inventory(cab, t2, snapshot | {8: ("PB-000004", 80, "bank_error")}))
    await inventory_applied(tap, t2)
    assert await bank_row(database_url, "PB-000004") == ("faulty", "CAB-0001", 8, 80, False)
    await cab.send("inventory", inventory(cab, t2 + 1000, snapshot))
    await inventory_applied(tap, t2 + 1000)
    assert (await bank_row(database_url, "PB-000004"))[0] == "in_cabinet"
    history = (await service.get("/v1/ops/banks/PB-000004/transitions", headers=headers)).json()["items"]
    assert [h["to_state"] for h in history][-4:] == ["maintenance", "in_cabinet", "faulty", "in_cabinet"]
