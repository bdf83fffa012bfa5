"""Bank attributes per division (issue 11) on a small data set computed by hand.

| bank  | division | model    | in service   | at eject: cycles / health | module report               |
| PB-A1 | Futian   | PB-5000  | 30 days ago  | 120 / 98                  | -                           |
| PB-A2 | Futian   | PB-5000  | 200 days ago | 900 / 91                  | newer: 960 / 88             |
| PB-A3 | Futian   | PB-10000 | 800 days ago | 1005 / 76                 | older than the eject: 10 / 100 (ignored) |
| PB-A4 | Futian   | -        | -            | - / -                     | -                           |
| PB-B1 | Luohu    | PB-5000  | 100 days ago | 300 / 95                  | -                           |
The cycle limit is 1,000; approaching from 950."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import BankEjected, DeviceTelemetryReported
from contracts.regions import region_at

pytestmark = pytest.mark.integration

FUTIAN = region_at(22.54, 114.05)
LUOHU = region_at(22.57, 114.14)


def eject(bank: str, region, model, days, cycles, health, at: datetime) -> BankEjected:
    return BankEjected(
        command_id=uuid.uuid4(),
        rental_id=uuid.uuid4(),
        bank_id=bank,
        cabinet_id="CAB-X",
        slot=1,
        battery_pct=90,
        ejected_at=at,
        bank_model=model,
        bank_in_service_at=None if days is None else at - timedelta(days=days),
        bank_charge_cycles=cycles,
        bank_health_pct=health,
        region=region,
    )


def module_report(bank: str, cycles: int, health: int, at: datetime) -> DeviceTelemetryReported:
    return DeviceTelemetryReported(
        device_id=bank, device_kind="bank", reported_at=at, received_at=at, charge_cycles=cycles, health_pct=health
    )


async def test_bank_attributes_per_division(client, bus, processed, admin) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    ejects = [
        await bus.publish(eject("PB-A1", FUTIAN, "PB-5000", 30, 120, 98, hour_ago), "CAB-X"),
        await bus.publish(eject("PB-A2", FUTIAN, "PB-5000", 200, 900, 91, hour_ago), "CAB-X"),
        await bus.publish(eject("PB-A3", FUTIAN, "PB-10000", 800, 1005, 76, hour_ago), "CAB-X"),
        await bus.publish(eject("PB-A4", FUTIAN, None, None, None, None, hour_ago), "CAB-X"),
        await bus.publish(eject("PB-B1", LUOHU, "PB-5000", 100, 300, 95, hour_ago), "CAB-X"),
    ]
    await processed(ejects)
    reports = [
        await bus.publish(module_report("PB-A2", 960, 88, hour_ago + timedelta(minutes=50)), "PB-A2"),
        await bus.publish(module_report("PB-A3", 10, 100, hour_ago - timedelta(hours=1)), "PB-A3"),
    ]
    await processed(reports)

    body = (await client.get("/v1/analytics/bank-attributes", headers=admin("analyst"))).json()
    table: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for row in body["rows"]:
        table.setdefault(row["division_code"], {}).setdefault(row["attribute"], []).append(
            (row["bucket"], row["count"])
        )
    assert table["440304"] == {
        "model": [("PB-5000", 2), ("PB-10000", 1), ("unknown", 1)],
        "age_in_service": [
            ("under 90 days", 1),
            ("90-179 days", 0),
            ("180-364 days", 1),
            ("1-2 years", 0),
            ("2 years or more", 1),
            ("unknown", 1),
        ],
        "charge_cycles": [
            ("0-249", 1),
            ("250-499", 0),
            ("500-749", 0),
            ("750-949", 0),
            ("950-999", 1),
            ("1000 or more", 1),
            ("unknown", 1),
        ],
        "battery_health": [("95-100%", 1), ("90-94%", 0), ("80-89%", 1), ("under 80%", 1), ("unknown", 1)],
        "cycle_limit": [("below", 1), ("approaching", 1), ("reached", 1), ("unknown", 1)],
    }
    luohu = {attribute: [b for b in buckets if b[1]] for attribute, buckets in table["440303"].items()}
    assert luohu == {
        "model": [("PB-5000", 1)],
        "age_in_service": [("90-179 days", 1)],
        "charge_cycles": [("250-499", 1)],
        "battery_health": [("95-100%", 1)],
        "cycle_limit": [("below", 1)],
    }
    city = (
        await client.get(
            "/v1/analytics/bank-attributes", params={"region": "440304", "level": "city"}, headers=admin("analyst")
        )
    ).json()["rows"]
    assert {r["division_code"] for r in city} == {"440300"}
    assert [(r["bucket"], r["count"]) for r in city if r["attribute"] == "cycle_limit"] == [
        ("below", 1),
        ("approaching", 1),
        ("reached", 1),
        ("unknown", 1),
    ]
    csv = (await client.get("/v1/analytics/bank-attributes", params={"format": "csv"}, headers=admin("analyst"))).text
    assert csv.splitlines()[0] == "division_code,name,attribute,bucket,count"
    assert "440304,Futian,cycle_limit,approaching,1" in csv
