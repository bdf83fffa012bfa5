"""Integration: real events on the dev broker become facts, read through the stats API.

The overview counts the whole store, and other producers may share the broker, so global
counters are compared as increases over a baseline; exact idempotency is checked per business
key in the service's own database. Hour buckets are checked at an hour of day that events
stamped `now` cannot fall into."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from contracts.events import BankReturned, PriceSnapshot, RentalEnded, RentalStarted, UserRegistered

pytestmark = pytest.mark.integration

PRICE = PriceSnapshot(period_minutes=60, price_per_period_fen=300, free_minutes=5, daily_cap_fen=3000)


def started(
    rental_id: uuid.UUID, user_id: uuid.UUID, at: datetime, *, bank: str = "PB-000001", cabinet: str = "CAB-0001"
) -> RentalStarted:
    return RentalStarted(
        rental_id=rental_id, user_id=user_id, bank_id=bank, cabinet_id=cabinet, slot=3, started_at=at, price=PRICE
    )


def ended(
    rental_id: uuid.UUID, user_id: uuid.UUID, at: datetime, *, seconds: int = 3900, fee: int = 300
) -> RentalEnded:
    return RentalEnded(
        rental_id=rental_id,
        user_id=user_id,
        bank_id="PB-000001",
        start_cabinet_id="CAB-0001",
        return_cabinet_id="CAB-0002",
        started_at=at,
        ended_at=at + timedelta(seconds=seconds),
        duration_seconds=seconds,
        fee_fen=fee,
    )


async def get_json(client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_stats_need_a_stats_role(client, auth, admin):
    for path in ("/v1/stats/rentals-per-hour", "/v1/stats/overview"):
        assert (await client.get(path)).status_code == 401
        response = await client.get(path, headers=auth(uuid.uuid4()))
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
        assert (await client.get(path, headers=admin("support"))).status_code == 403
        for role in ("super_admin", "operator", "analyst"):
            assert (await client.get(path, headers=admin(role))).status_code == 200


async def test_rentals_per_hour_shape_and_limits(client, admin):
    body = await get_json(client, "/v1/stats/rentals-per-hour", admin("analyst"))
    assert body["timezone"] == "Asia/Shanghai"
    assert [b["hour"] for b in body["buckets"]] == list(range(24))
    start, end = datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])
    assert end - start == timedelta(days=7)  # the default
    assert end.utcoffset() == timedelta(hours=8)
    body = await get_json(client, "/v1/stats/rentals-per-hour", admin("analyst"), days=90)
    assert len(body["buckets"]) == 24
    for days in (0, 91, "x"):
        response = await client.get("/v1/stats/rentals-per-hour", headers=admin("analyst"), params={"days": days})
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"


async def test_bucket_hours_follow_the_configured_zone(client, bus, admin, processed, other_app, wait):
    now = datetime.now(UTC)
    utc_hour = (now.hour + 6) % 24  # not the current hour in UTC nor in Shanghai (UTC+8)
    moment = (now - timedelta(days=2)).replace(hour=utc_hour, minute=30, second=0, microsecond=0)
    shanghai_hour = (utc_hour + 8) % 24
    headers = admin("analyst")
    base = [b["rentals"] for b in (await get_json(client, "/v1/stats/rentals-per-hour", headers))["buckets"]]

    user = uuid.uuid4()
    sent = []
    for minutes in (0, 10, 25):
        rental = uuid.uuid4()
        envelope = bus.envelope(started(rental, user, moment + timedelta(minutes=minutes)), key=str(rental))
        await bus.send(envelope)
        sent.append(envelope)
    await bus.send(sent[0])  # a redelivery of the same event
    await processed(sent)

    async def grown():
        body = await get_json(client, "/v1/stats/rentals-per-hour", headers)
        counts = [b["rentals"] for b in body["buckets"]]
        return counts if counts[shanghai_hour] - base[shanghai_hour] >= 3 else None

    counts = await wait(grown, what="three rentals in the Shanghai bucket")
    assert counts[shanghai_hour] - base[shanghai_hour] == 3
    assert counts[utc_hour] == base[utc_hour]

    # The same facts, reported by an instance configured for UTC.
    utc_client = await other_app(stats_timezone="UTC")
    body = await get_json(utc_client, "/v1/stats/rentals-per-hour", headers)
    shanghai = await get_json(client, "/v1/stats/rentals-per-hour", headers)
    assert body["timezone"] == "UTC"
    assert datetime.fromisoformat(body["to"]).utcoffset() == timedelta(0)
    # UTC hour `utc_hour` is Shanghai hour `shanghai_hour`: both views count the same rentals there.
    assert body["buckets"][utc_hour]["rentals"] >= 3
    assert body["buckets"][utc_hour]["rentals"] == shanghai["buckets"][shanghai_hour]["rentals"]
    # A window that ends before the rentals started does not count them.
    assert (await get_json(client, "/v1/stats/rentals-per-hour", headers, days=1))["buckets"][shanghai_hour][
        "rentals"
    ] == 0


async def test_overview_counts_each_fact_once(client, bus, admin, processed, db, wait):
    headers = admin("operator")
    base = await get_json(client, "/v1/stats/overview", headers)
    now = datetime.now(UTC)
    user = uuid.uuid4()
    rental_a, rental_b, rental_c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    registered = bus.envelope(UserRegistered(user_id=user, registered_at=now, terms_version="v1"), key=str(user))
    start_a = bus.envelope(started(rental_a, user, now - timedelta(hours=1)), key=str(rental_a))
    start_b = bus.envelope(started(rental_b, user, now - timedelta(minutes=5)), key=str(rental_b))
    end_a = bus.envelope(ended(rental_a, user, now - timedelta(hours=1), fee=300), key=str(rental_a))
    # C's end arrives before its start: the fact must still end up complete and counted once.
    end_c = bus.envelope(ended(rental_c, user, now - timedelta(hours=2), seconds=600, fee=150), key=str(rental_c))
    start_c = bus.envelope(started(rental_c, user, now - timedelta(hours=2)), key=str(rental_c))
    returned = bus.envelope(
        BankReturned(
            report_id=f"m-{uuid.uuid4().hex[:8]}",
            bank_id="PB-000001",
            cabinet_id="CAB-0002",
            slot=4,
            battery_pct=80,
            returned_at=now,
            device_reported_at=now,
            received_at=now,
        ),
        key="PB-000001",
    )
    again = [
        bus.envelope(UserRegistered(user_id=user, registered_at=now, terms_version="v1"), key=str(user)),
        bus.envelope(returned.data, key="PB-000001"),  # same report, new event id
    ]
    for envelope in [registered, registered, start_a, start_b, end_a, end_a, end_c, start_c, returned, returned]:
        await bus.send(envelope)
    for envelope in again:
        await bus.send(envelope)
    await processed([registered, start_a, start_b, end_a, end_c, start_c, returned, *again])

    async def grown():
        body = await get_json(client, "/v1/stats/overview", headers)
        delta = {k: body[k] - base[k] for k in base if isinstance(base[k], int)}
        enough = (
            delta["users_registered"] >= 1
            and delta["rentals_started"] >= 3
            and delta["rentals_ended"] >= 2
            and delta["revenue_fen"] >= 450
        )
        return delta if enough else None

    delta = await wait(grown, what="overview to count the new facts")
    assert set(delta) == {"users_registered", "rentals_started", "rentals_ended", "revenue_fen", "active_rentals"}
    assert (base["since"], base["rentals_started_since"], base["revenue_since_fen"]) == (None, None, None)
    # Since a moment (the console asks from the start of the operator's day): A and B started after it, A
    # ended after it (its fee counts, at +5 min), C started and ended before it.
    since = now - timedelta(minutes=90)
    today = await get_json(client, "/v1/stats/overview", headers, since=since.isoformat())
    later = await get_json(client, "/v1/stats/overview", headers, since=(now + timedelta(minutes=10)).isoformat())
    assert datetime.fromisoformat(today["since"]) == since
    assert today["rentals_started_since"] - later["rentals_started_since"] >= 2
    assert today["revenue_since_fen"] - later["revenue_since_fen"] >= 300
    before_c = await get_json(client, "/v1/stats/overview", headers, since=(now - timedelta(hours=3)).isoformat())
    assert before_c["revenue_since_fen"] - today["revenue_since_fen"] >= 150  # C's fee, ended before `since`

    async with db.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM user_facts WHERE user_id = :u"), {"u": user}) == 1
        rows = (
            await conn.execute(
                text(
                    "SELECT rental_id, slot, ended_at IS NOT NULL AS ended, fee_fen, duration_seconds, "
                    "cabinet_id, return_cabinet_id FROM rental_facts WHERE user_id = :u"
                ),
                {"u": user},
            )
        ).all()
        facts = {row.rental_id: row for row in rows}
        assert set(facts) == {rental_a, rental_b, rental_c}
        assert facts[rental_a].ended and facts[rental_a].fee_fen == 300 and facts[rental_a].duration_seconds == 3900
        assert not facts[rental_b].ended and facts[rental_b].fee_fen is None
        assert facts[rental_c].ended and facts[rental_c].fee_fen == 150 and facts[rental_c].slot == 3
        assert facts[rental_c].cabinet_id == "CAB-0001" and facts[rental_c].return_cabinet_id == "CAB-0002"
        assert (
            await conn.scalar(
                text("SELECT count(*) FROM return_facts WHERE report_id = :r"), {"r": returned.data.report_id}
            )
            == 1
        )
