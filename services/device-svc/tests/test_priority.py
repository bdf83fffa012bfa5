"""Critical device messages never wait behind bulk traffic (issue 9: an eject result queued behind
telemetry made billing answer "no answer" although the bank had come out)."""

import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from contracts.mqtt import Eject
from kit.db import make_engine
from kit.testing import eventually

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def rows_locked(database_url: str, cabinet_ids: list[str]) -> AsyncIterator[None]:
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT id FROM cabinets WHERE id = ANY(:ids) FOR UPDATE"), {"ids": cabinet_ids})
            try:
                yield
            finally:
                await conn.rollback()
    finally:
        await engine.dispose()


async def lock_waiters(database_url: str) -> int:
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return int((await conn.execute(text(query))).scalar_one())
    finally:
        await engine.dispose()


async def test_an_eject_result_passes_a_stalled_telemetry_pipeline(
    service, fleet, online, cabinets, tap, eject, clock, database_url
):
    cab = await online("CAB-0001")
    others = {cid: next(c for c in fleet["cabinets"] if c["cabinet_id"] == cid) for cid in ("CAB-0002", "CAB-0003")}
    senders = {cid: await cabinets(cid, entry["password"], subscribe=False) for cid, entry in others.items()}
    async with rows_locked(database_url, list(others)):
        # Both telemetry writers take a batch holding a locked cabinet and wait; CAB-0001's own heartbeat
        # queues behind them, uncommitted and unacknowledged: the telemetry pipeline is stalled.
        for n, sender in enumerate(senders.values(), start=1):
            await sender.send(
                "heartbeat", {"type": "heartbeat", "msg_id": sender.next_id(), "ts": clock(), "rssi_dbm": -70}
            )
            await eventually(lambda n=n: _at_least(database_url, n), what=f"{n} telemetry writer(s) waiting")
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


async def _at_least(database_url: str, n: int) -> bool:
    return await lock_waiters(database_url) >= n
