"""A connect storm's state messages go in batches (telemetry/snapshots.py): cabinets' status and the
hellos that agree with the registry are written together, set-based; a snapshot that moves a bank, an
older one and a replay take the one-by-one path (mqtt/handlers.py), which owns those rules."""

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from kit.db import make_engine
from kit.testing import eventually

pytestmark = pytest.mark.integration

STATUS_ONLINE = {"type": "status", "v": 1, "online": True}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def fallbacks() -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "pb_device_state_batch_fallback"
        for s in m.samples
        if s.name.endswith("_total")
    )


async def rows(database_url: str, sql: str) -> list[Any]:
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql))).all())
    finally:
        await engine.dispose()


def hello(cab: Any, entry: dict[str, Any], clock: Any, *, battery: int | None = None, **changes: Any) -> dict:
    slots = [{k: v for k, v in s.items() if v is not None} | {"slot": s["slot"]} for s in entry["slots"]]
    if battery is not None:
        slots = [s | {"battery_pct": battery} if s.get("bank_id") else s for s in slots]
    return {
        "type": "hello",
        "v": 1,
        "msg_id": cab.next_id(),
        "ts": clock(),
        "firmware": "fw-storm",
        "slot_count": entry["slot_count"],
        "slots": slots,
    } | changes


async def test_a_connect_storm_is_written_by_the_batch(service, fleet, service_account, tap, database_url, clock):
    """Every cabinet at once: its status online and a hello agreeing with the registry (new battery
    levels): all shown online with one transition each, snapshot time, firmware and batteries
    recorded, banks present and rentable in the feed, and none left to the one-by-one path."""
    before = fallbacks()
    batches = metric("pb_device_state_batch_size_count")
    cabinets = fleet["cabinets"]
    await asyncio.gather(
        *(
            service_account.send("status", STATUS_ONLINE, topic=f"pb/v1/devices/{c['cabinet_id']}/up/status")
            for c in cabinets
        )
    )
    await asyncio.gather(
        *(
            service_account.send(
                "hello", hello(service_account, c, clock, battery=77), topic=f"pb/v1/devices/{c['cabinet_id']}/up/hello"
            )
            for c in cabinets
        )
    )
    for c in cabinets:
        banks = [s for s in c["slots"] if s.get("bank_id")]
        report = await tap.wait_for("device.telemetry.reported", device_id=c["cabinet_id"], banks_present=len(banks))
        assert report.banks_rentable == len([s for s in banks if not s.get("fault")])
        assert len(tap.matching("device.cabinet.status_changed", cabinet_id=c["cabinet_id"], online=True)) == 1

    async def recorded() -> bool:
        found = await rows(
            database_url,
            "SELECT count(*) FROM cabinets WHERE online AND inventory_at IS NOT NULL AND firmware = 'fw-storm'",
        )
        return bool(found[0][0] == len(cabinets))

    await eventually(recorded, what="every cabinet online with its snapshot recorded")
    placed = await rows(
        database_url, "SELECT battery_pct, state, last_report_at IS NOT NULL FROM banks WHERE cabinet_id IS NOT NULL"
    )
    assert placed and all(b[0] == 77 and b[2] for b in placed)
    assert fallbacks() == before
    assert metric("pb_device_state_batch_size_count") > batches


async def test_a_snapshot_that_moves_a_bank_takes_the_one_by_one_path(
    service, fleet, service_account, tap, database_url, clock
):
    """PB-000003 sits in CAB-0001; CAB-0002's hello shows it in its empty slot 8: the registry follows the
    cabinet (the one-by-one path's rules), and the batch counted why it left it there."""
    entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == "CAB-0002")
    before = metric("pb_device_state_batch_fallback_total", reason="slot_changed")
    message = hello(service_account, entry, clock)
    message["slots"] = [s for s in message["slots"] if s["slot"] != 8] + [
        {"slot": 8, "bank_id": "PB-000003", "battery_pct": 90}
    ]
    await service_account.send("hello", message, topic="pb/v1/devices/CAB-0002/up/hello")

    async def moved() -> bool:
        found = await rows(database_url, "SELECT cabinet_id, slot_no FROM banks WHERE id = 'PB-000003'")
        return bool(found[0] == ("CAB-0002", 8))

    await eventually(moved, what="PB-000003 in CAB-0002 slot 8")
    assert metric("pb_device_state_batch_fallback_total", reason="slot_changed") == before + 1


async def test_a_replayed_hello_changes_nothing(service, fleet, service_account, database_url, clock):
    entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == "CAB-0003")
    message = hello(service_account, entry, clock, battery=60)
    duplicates = metric("pb_device_messages_rejected_total", reason="duplicate")
    await service_account.send("hello", message, topic="pb/v1/devices/CAB-0003/up/hello")

    async def applied() -> bool:
        found = await rows(
            database_url, "SELECT count(*) FROM banks WHERE cabinet_id = 'CAB-0003' AND battery_pct = 60"
        )
        return bool(found[0][0] > 0)

    await eventually(applied, what="the hello applied")
    await service_account.send(
        "hello",
        message | {"slots": [s | {"battery_pct": 61} if s.get("bank_id") else s for s in message["slots"]]},
        topic="pb/v1/devices/CAB-0003/up/hello",
    )

    async def refused() -> bool:
        return metric("pb_device_messages_rejected_total", reason="duplicate") > duplicates

    await eventually(refused, what="the replay refused as a duplicate")
    found = await rows(database_url, "SELECT count(*) FROM banks WHERE cabinet_id = 'CAB-0003' AND battery_pct = 61")
    assert found[0][0] == 0
