"""Hotspot alerts (issue 11) on a small scenario computed by hand.

Cells (H3 resolution 8): A in Futian and B, its neighbour; C in Guangzhou and D, its neighbour (far from
A and B). Stock reports (slots / banks present / rentable):

| cabinet | cell | slots | present | rentable | free | spare banks (rentable - 2) |
| CAB-A1  | A    | 8     | 1       | 0        | 7    | -                          |
| CAB-A2  | A    | 6     | 2       | 1        | 4    | -                          |
| CAB-B1  | B    | 8     | 6       | 5        | 2    | 3                          |
| CAB-B2  | B    | 8     | 4       | 3        | 4    | 1                          |
| CAB-C1  | C    | 4     | 4       | 4        | 0    | -                          |
| CAB-D1  | D    | 10    | 2       | 2        | 8    | room 8 - 2 = 6             |

Demand in the last hour: A has 3 borrows and 2 scans refused for lack of a bank (a borrow two hours ago
and a scan refused because the cabinet was offline do not count): demand 5 >= 3 with 1 rentable bank, so
A is dry; it needs min(5 - 1, 11 free) = 4 banks: 3 from CAB-B1 and 1 from CAB-B2, both into CAB-A1 (the
most room). C has 0 free slots (full); it is relieved to 3 free by moving 3 banks from CAB-C1 to CAB-D1.
B and D hold no condition."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.hotspots.rules import HotspotRules
from analytics_svc.hotspots.service import evaluate
from contracts.events import (
    DeviceTelemetryReported,
    EjectFailed,
    EjectFailureReason,
    EventData,
    HotspotCleared,
    HotspotKind,
    HotspotRaised,
    PriceSnapshot,
    RebalanceMove,
    RentalStarted,
)
from contracts.regions import RegionRef, cell_at
from kit.db import make_sessionmaker, unit_of_work
from kit.outbox import add_event

pytestmark = pytest.mark.integration

A = cell_at(22.54, 114.05)
B = sorted(h3.grid_ring(A, 1))[0]
C = cell_at(23.13, 113.26)
D = sorted(h3.grid_ring(C, 1))[0]
PRICE = PriceSnapshot(period_minutes=60, price_per_period_fen=300, free_minutes=5, daily_cap_fen=3000)
STOCK = {
    "CAB-A1": (A, "440304", 8, 1, 0),
    "CAB-A2": (A, "440304", 6, 2, 1),
    "CAB-B1": (B, "440304", 8, 6, 5),
    "CAB-B2": (B, "440304", 8, 4, 3),
    "CAB-C1": (C, "440104", 4, 4, 4),
    "CAB-D1": (D, "440104", 10, 2, 2),
}


def stock(
    cabinet: str, at: datetime, present: int | None = None, rentable: int | None = None
) -> DeviceTelemetryReported:
    cell, division, slots, was_present, was_rentable = STOCK[cabinet]
    return DeviceTelemetryReported(
        device_id=cabinet,
        reported_at=at,
        received_at=at,
        banks_present=was_present if present is None else present,
        banks_rentable=was_rentable if rentable is None else rentable,
        slot_count=slots,
        region=RegionRef(division_code=division, cell=cell),
    )


def borrow(cabinet: str, at: datetime) -> RentalStarted:
    return RentalStarted(
        rental_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        bank_id="PB-" + uuid.uuid4().hex[:6],
        cabinet_id=cabinet,
        slot=1,
        started_at=at,
        price=PRICE,
    )


def refused(cabinet: str, reason: EjectFailureReason) -> EjectFailed:
    return EjectFailed(
        command_id=uuid.uuid4(), rental_id=uuid.uuid4(), bank_id=None, cabinet_id=cabinet, reason=reason, detail=""
    )


async def test_a_dry_and_a_full_cell_are_raised_once_with_moves_and_cleared_once(
    client, bus, processed, db, admin
) -> None:
    now = datetime.now(UTC)
    reports = [await bus.publish(stock(c, now - timedelta(minutes=5)), c) for c in STOCK]
    await processed(reports)  # the rentals below find their cabinet's cell
    demand = [
        *[await bus.publish(borrow("CAB-A1", now - timedelta(minutes=m)), "r") for m in (10, 20)],
        await bus.publish(borrow("CAB-A2", now - timedelta(minutes=30)), "r"),
        await bus.publish(borrow("CAB-A2", now - timedelta(hours=2)), "r"),  # before the window
        *[await bus.publish(refused("CAB-A1", EjectFailureReason.NO_RENTABLE_BANK), "CAB-A1") for _ in range(2)],
        await bus.publish(refused("CAB-A2", EjectFailureReason.CABINET_OFFLINE), "CAB-A2"),  # not lack of a bank
    ]
    await processed(demand)

    published: list[EventData] = []
    sessionmaker = make_sessionmaker(db)

    async def publish(session: AsyncSession, data: EventData, key: str) -> Any:
        published.append(data)
        return await add_event(session, data, key=key, producer="analytics-svc")

    rules = HotspotRules()

    async def run() -> Any:
        async with unit_of_work(sessionmaker) as session:
            return await evaluate(session, publish, rules, datetime.now(UTC))

    first = await run()
    assert (first.raised, first.cleared, first.open) == (2, 0, 2)
    raised = {e.cell: e for e in published if isinstance(e, HotspotRaised)}
    assert set(raised) == {A, C}
    dry, full = raised[A], raised[C]
    assert (dry.kind, dry.borrows, dry.refused, dry.banks_available, dry.free_slots) == (HotspotKind.DRY, 3, 2, 1, 11)
    assert dry.moves == [
        RebalanceMove(from_cabinet_id="CAB-B1", to_cabinet_id="CAB-A1", banks=3),
        RebalanceMove(from_cabinet_id="CAB-B2", to_cabinet_id="CAB-A1", banks=1),
    ]
    assert (full.kind, full.banks_available, full.free_slots) == (HotspotKind.FULL, 4, 0)
    assert full.moves == [RebalanceMove(from_cabinet_id="CAB-C1", to_cabinet_id="CAB-D1", banks=3)]

    second = await run()
    assert (second.raised, second.cleared, second.open) == (0, 0, 2)  # raised once
    assert len(published) == 2

    reader = admin("analyst")
    body = (await client.get("/v1/analytics/hotspots", headers=reader)).json()
    assert {(a["cell"], a["kind"]) for a in body["items"]} == {(A, "dry"), (C, "full")}
    alert = next(a for a in body["items"] if a["kind"] == "dry")
    assert alert["moves"] == [m.model_dump() for m in dry.moves]
    csv = (await client.get("/v1/analytics/hotspots", params={"format": "csv"}, headers=reader)).text
    assert "3 from CAB-B1 to CAB-A1; 1 from CAB-B2 to CAB-A1" in csv
    cells = {
        row["cell"]: row for row in (await client.get("/v1/analytics/supply-demand", headers=reader)).json()["items"]
    }
    assert {k: cells[A][k] for k in ("borrows", "refused", "demand", "banks_available", "free_slots", "dry")} == {
        "borrows": 3,
        "refused": 2,
        "demand": 5,
        "banks_available": 1,
        "free_slots": 11,
        "dry": True,
    }
    assert (cells[B]["dry"], cells[B]["full"], cells[C]["full"]) == (False, False, True)
    assert (await client.get("/v1/analytics/hotspots", headers=admin("support"))).status_code == 403

    # The banks were moved: A has 5 rentable (no longer dry), C has 3 free slots (no longer full).
    later = datetime.now(UTC)
    moved = [
        await bus.publish(stock("CAB-A1", later, present=5, rentable=4), "CAB-A1"),
        await bus.publish(stock("CAB-C1", later, present=1, rentable=1), "CAB-C1"),
    ]
    await processed(moved)
    third = await run()
    assert (third.raised, third.cleared, third.open) == (0, 2, 0)
    cleared = {e.cell: e for e in published if isinstance(e, HotspotCleared)}
    assert set(cleared) == {A, C}
    assert cleared[A].alert_id == dry.alert_id
    assert (await run()).cleared == 0  # cleared once
    assert (await client.get("/v1/analytics/hotspots", headers=reader)).json()["items"] == []
    every = (await client.get("/v1/analytics/hotspots", params={"state": "all"}, headers=reader)).json()["items"]
    assert all(a["cleared_at"] is not None for a in every) and len(every) == 2
