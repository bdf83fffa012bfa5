"""Critical device messages never wait behind bulk traffic (issue 9: an eject result queued behind
telemetry made billing answer "no answer" although the bank had come out)."""

from collections.abc import Awaitable, Callable

import pytest

from contracts.mqtt import Eject
from kit.testing import eventually

pytestmark = pytest.mark.integration


async def test_an_eject_result_passes_a_stalled_telemetry_pipeline(
    service, fleet, online, cabinets, tap, eject, clock, lock_cabinets, lock_waiters
):
    cab = await online("CAB-0001")
    others = {cid: next(c for c in fleet["cabinets"] if c["cabinet_id"] == cid) for cid in ("CAB-0002", "CAB-0003")}
    senders = {cid: await cabinets(cid, entry["password"], subscribe=False) for cid, entry in others.items()}
    async with lock_cabinets(*others):
        # Both telemetry writers take a batch holding a locked cabinet and wait; CAB-0001's own heartbeat
        # queues behind them, uncommitted and unacknowledged: the telemetry pipeline is stalled.
        for n, sender in enumerate(senders.values(), start=1):
            await sender.send(
                "heartbeat", {"type": "heartbeat", "msg_id": sender.next_id(), "ts": clock(), "rssi_dbm": -70}
            )
            await eventually(lambda n=n: _at_least(lock_waiters, n), what=f"{n} telemetry writer(s) waiting")
        stuck = cab.next_id()
        await cab.send("heartbeat", {"type": "heartbeat", "msg_id": stuck, "ts": clock(), "rssi_dbm": -71})

        cmd = await eject("PB-000001")
        command = await cab.receive()
        assert isinstance(command, Eject)
        await cab.send(
            "eject_result",
            {
                "type": "eject_result",
                "msg_id": cab.next_id(),
                "ts": clock(),
                "cmd_id": command.cmd_id,
                "result": "ok",
                "slot": 1,
                "bank_id": "PB-000001",
            },
        )
        await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
        # The result went through while the heartbeat sent before it is still waiting.
        assert not tap.matching("device.telemetry.reported", device_id="CAB-0001", rssi_dbm=-71)
    # Released: nothing was lost.
    await tap.wait_for("device.telemetry.reported", device_id="CAB-0001", rssi_dbm=-71)
    for cid in others:
        await tap.wait_for("device.telemetry.reported", device_id=cid, rssi_dbm=-70)


async def _at_least(lock_waiters: Callable[[], Awaitable[int]], n: int) -> bool:
    return await lock_waiters() >= n
