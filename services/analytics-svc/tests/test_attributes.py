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
from sqlalchemy import text

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


async def test_user_attributes(client, bus, processed, admin) -> None:
    """U1 registered 10 days ago, credit good and deposit-free (an older change, poor, arrives later and
    is ignored), rented in Futian, 20 this year; U2 60 days ago, poor, pays a deposit, 40 this year; U3 400
    days ago, no credit change seen, no birth year; U4 only a credit change seen (excellent, deposit-free),
    registration unknown."""
    from contracts.events import CreditChanged, PriceSnapshot, RentalStarted, UserRegistered

    now = datetime.now(UTC)
    u1, u2, u3, u4 = (uuid.uuid4() for _ in range(4))

    def credit(user, level, free, at):
        return CreditChanged(user_id=user, score=600, delta=5, level=level, deposit_free=free, reason="r", at=at)

    def registered(user, days, age=None):
        return UserRegistered(
            user_id=user,
            registered_at=now - timedelta(days=days),
            terms_version="v1",
            birth_year=None if age is None else now.year - age,
        )

    first = [
        await bus.publish(registered(u1, 10, age=20), str(u1)),
        await bus.publish(registered(u2, 60, age=40), str(u2)),
        await bus.publish(registered(u3, 400), str(u3)),
        await bus.publish(credit(u1, "good", True, now - timedelta(minutes=5)), str(u1)),
        await bus.publish(credit(u1, "poor", False, now - timedelta(minutes=50)), str(u1)),  # older: ignored
        await bus.publish(credit(u2, "poor", False, now), str(u2)),
        await bus.publish(credit(u4, "excellent", True, now), str(u4)),
        await bus.publish(
            DeviceTelemetryReported(
                device_id="CAB-U", reported_at=now, received_at=now, banks_present=3, region=FUTIAN
            ),
            "CAB-U",
        ),
    ]
    await processed(first)
    price = PriceSnapshot(period_minutes=60, price_per_period_fen=300, free_minutes=5, daily_cap_fen=3000)
    rental = RentalStarted(
        rental_id=uuid.uuid4(), user_id=u1, bank_id="PB-U", cabinet_id="CAB-U", slot=1, started_at=now, price=price
    )
    await processed([await bus.publish(rental, str(rental.rental_id))])

    def table(rows):
        out: dict[str, list[tuple[str, int]]] = {}
        for row in rows:
            out.setdefault(row["attribute"], []).append((row["bucket"], row["count"]))
        return out

    everyone = (await client.get("/v1/analytics/user-attributes", headers=admin("analyst"))).json()["rows"]
    assert {r["division_code"] for r in everyone} == {""}
    assert table(everyone) == {
        "credit_level": [("excellent", 1), ("good", 1), ("poor", 1), ("unknown", 1)],
        "tenure": [("under 30 days", 1), ("30-89 days", 1), ("90-364 days", 0), ("1 year or more", 1), ("unknown", 1)],
        "deposit_free": [("yes", 2), ("no", 1), ("unknown", 1)],
        "age_band": [
            ("under 18", 0),
            ("18-24", 1),
            ("25-34", 0),
            ("35-44", 1),
            ("45-54", 0),
            ("55-64", 0),
            ("65 or more", 0),
            ("unknown", 2),
        ],
    }
    futian = (
        await client.get("/v1/analytics/user-attributes", params={"region": "440304"}, headers=admin("analyst"))
    ).json()["rows"]
    assert {attribute: [b for b in buckets if b[1]] for attribute, buckets in table(futian).items()} == {
        "credit_level": [("good", 1)],
        "tenure": [("under 30 days", 1)],
        "deposit_free": [("yes", 1)],
        "age_band": [("18-24", 1)],
    }
    assert futian[0]["name"] == "Futian"
    csv = (await client.get("/v1/analytics/user-attributes", params={"format": "csv"}, headers=admin("analyst"))).text
    assert ",deposit_free,yes,2" in csv
    assert not any(str(u) in csv for u in (u1, u2, u3, u4))


async def test_birth_year_is_forgotten_at_deregistration(client, bus, processed, admin, db) -> None:
    """U1 (30 this year) deregisters: the year is erased. U2's deregistration arrives before its registration
    (70 this year): the late registration does not bring the year back. U3 (16) stays."""
    from contracts.events import UserDeregistered, UserRegistered

    now = datetime.now(UTC)
    u1, u2, u3 = (uuid.uuid4() for _ in range(3))

    def registered(user, age):
        return UserRegistered(user_id=user, registered_at=now, terms_version="v1", birth_year=now.year - age)

    def bands():
        async def get():
            rows = (await client.get("/v1/analytics/user-attributes", headers=admin("analyst"))).json()["rows"]
            return {r["bucket"]: r["count"] for r in rows if r["attribute"] == "age_band" and r["count"]}

        return get()

    await processed([await bus.publish(registered(u1, 30), str(u1)), await bus.publish(registered(u3, 16), str(u3))])
    assert await bands() == {"25-34": 1, "under 18": 1}
    await processed(
        [
            await bus.publish(UserDeregistered(user_id=u1, at=now), str(u1)),
            await bus.publish(UserDeregistered(user_id=u2, at=now), str(u2)),
        ]
    )
    await processed([await bus.publish(registered(u2, 70), str(u2))])
    assert await bands() == {"under 18": 1, "unknown": 2}
    async with db.connect() as conn:
        kept = (await conn.execute(text("SELECT user_id, birth_year, registered_at FROM user_facts"))).all()
    assert {(row.user_id, row.birth_year) for row in kept} == {(u1, None), (u2, None), (u3, now.year - 16)}
    assert all(row.registered_at is not None for row in kept)
