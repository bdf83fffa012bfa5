"""The government supervision interface on the data set of conftest.py: MDS 2.0 version
negotiation, hourly rules, regulator-only access with region scopes, the access log, and
de-identification (every answer searched for user ids, rental ids and phone numbers)."""

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from contracts.events import DeviceTelemetryReported

pytestmark = pytest.mark.integration

MDS = {"Accept": "application/vnd.mds+json;version=2.0"}
R1_END_HOUR = "2026-11-02T01"  # R1 ended 09:40 in Shanghai: 01:40 UTC
PHONE = re.compile(r"(?<!\d)(\+?86)?1[3-9]\d{9}(?!\d)")  # a mainland mobile number, not part of a longer one


@pytest.fixture
def regulator(signer):
    def headers(*regions: str, accept: str | None = MDS["Accept"]) -> dict[str, str]:
        scope = " ".join(["supervision:read", *(f"supervision:region:{r}" for r in regions)])
        token = signer.issue(f"key-{uuid.uuid4().hex[:8]}", kind="client", scope=scope)
        out = {"Authorization": f"Bearer {token}"}
        if accept is not None:
            out["Accept"] = accept
        return out

    return headers


def hour(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H")


async def test_only_a_regulator_credential_opens_it_and_it_opens_nothing_else(client, regulator, admin, auth, signer):
    url = f"/v1/supervision/trips?end_time={R1_END_HOUR}"
    assert (await client.get(url, headers=MDS)).status_code == 401
    for headers in (
        {**auth(uuid.uuid4()), **MDS},
        {**admin("super_admin"), **MDS},
        {**admin("analyst"), **MDS},
        {"Authorization": f"Bearer {signer.issue('k', kind='client', scope='stats:read')}", **MDS},
    ):
        response = await client.get(url, headers=headers)
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert (await client.get(url, headers=regulator())).status_code == 200
    for other in ("/v1/analytics/rentals", "/v1/stats/overview", "/v1/stats/rentals-per-hour"):
        assert (await client.get(other, headers=regulator())).status_code == 403


async def test_version_negotiation(client, regulator):
    url = f"/v1/supervision/trips?end_time={R1_END_HOUR}"
    for accept in (None, "application/json", "*/*", "application/vnd.mds+json", "application/vnd.mds+json;version=1.2"):
        response = await client.get(url, headers=regulator(accept=accept))
        assert response.status_code == 406, accept
        assert response.json()["code"] == "unsupported_version"
    for accept in (MDS["Accept"], "application/json, application/vnd.mds+json; version=2.0"):
        response = await client.get(url, headers=regulator(accept=accept))
        assert response.status_code == 200, accept
        assert response.headers["content-type"] == "application/vnd.mds+json;version=2.0"
        assert response.json()["version"] == "2.0.0"


async def test_hourly_rules(client, regulator):
    now = datetime.now(UTC)
    names = {"trips": "end_time", "historical": "event_time", "telemetry": "telemetry_time"}
    for path in ("/v1/supervision/trips", "/v1/supervision/events/historical", "/v1/supervision/telemetry"):
        name = names[path.rsplit("/", 1)[1]]
        for value in (None, "2026-11-02", "2026-11-02T24", "2026-13-02T01", "2026-11-02T01:00"):
            params = {} if value is None else {name: value}
            response = await client.get(path, headers=regulator(), params=params)
            assert response.status_code == 400, (path, value)
            assert response.json()["code"] == "bad_param"
        future = await client.get(path, headers=regulator(), params={name: hour(now + timedelta(hours=2))})
        assert future.status_code == 404
        current = await client.get(path, headers=regulator(), params={name: hour(now)})
        assert current.status_code == 202
        empty = await client.get(path, headers=regulator(), params={name: "2026-11-01T05"})
        assert empty.status_code == 200
        assert next(iter(v for k, v in empty.json().items() if k != "version")) == []


async def test_trips_of_an_hour(seeded, regulator, dataset):
    body = (await seeded.get("/v1/supervision/trips", headers=regulator(), params={"end_time": R1_END_HOUR})).json()
    assert len(body["trips"]) == 1
    trip = body["trips"][0]
    r1 = next(r for r in dataset.rentals(datetime.now(UTC)) if r.name == "R1")
    assert trip["duration"] == 1800 and trip["trip_type"] == "rental"
    assert trip["start_time"] == int(r1.started_at.timestamp() * 1000)
    assert trip["end_time"] == int(r1.ended_at.timestamp() * 1000)
    assert trip["trip_attributes"]["start_division"] == "440304"
    assert trip["trip_attributes"]["end_division"] == "440303"
    assert trip["trip_id"] != str(r1.rental_id) and uuid.UUID(trip["trip_id"]).version == 4
    assert trip["start_stop_id"] != trip["end_stop_id"] and trip["distance"] > 1000
    assert abs(trip["start_location"]["lat"] - 22.54) < 0.01
    # the trip's events carry the same trip id
    events = (
        await seeded.get("/v1/supervision/events/historical", headers=regulator(), params={"event_time": R1_END_HOUR})
    ).json()["events"]
    assert [(e["event_types"], e["vehicle_state"]) for e in events] == [
        (["trip_start"], "on_trip"),  # R1
        (["trip_end"], "available"),  # R1
        (["trip_start"], "on_trip"),  # R2, 09:50 in Shanghai
    ]
    assert events[0]["trip_ids"] == events[1]["trip_ids"] == [trip["trip_id"]] != events[2]["trip_ids"]


async def test_telemetry_of_an_hour(seeded, bus, processed, regulator, dataset):
    """Bank module positions: a point during R1 carries R1's trip id, one after it none, one without a
    position is not kept; locations are cell centres, ids keyed."""
    r1 = next(r for r in dataset.rentals(datetime.now(UTC)) if r.name == "R1")
    readings = [
        (r1.started_at + timedelta(minutes=10), dataset.region("A"), 80),  # 01:20 UTC, during R1
        (r1.started_at + timedelta(minutes=35), dataset.region("B"), 70),  # 01:45, after R1's return
        (r1.started_at + timedelta(minutes=20), None, 75),  # no position: not a telemetry point
        (r1.started_at + timedelta(hours=2), dataset.region("B"), 60),  # another hour
    ]
    sent = [
        await bus.publish(
            DeviceTelemetryReported(
                device_id="PB-1",
                device_kind="bank",
                reported_at=at,
                received_at=at,
                battery_pct=battery,
                lat=22.54 if where else None,
                lon=114.05 if where else None,
                region=where,
            ),
            "PB-1",
        )
        for at, where, battery in readings
    ]
    await processed(sent)
    body = (
        await seeded.get("/v1/supervision/telemetry", headers=regulator(), params={"telemetry_time": R1_END_HOUR})
    ).json()
    points = body["telemetry"]
    assert [(p["timestamp"], p["battery_percent"]) for p in points] == [
        (int(readings[0][0].timestamp() * 1000), 80),
        (int(readings[1][0].timestamp() * 1000), 70),
    ]
    trip = (await seeded.get("/v1/supervision/trips", headers=regulator(), params={"end_time": R1_END_HOUR})).json()
    assert points[0]["trip_ids"] == [trip["trips"][0]["trip_id"]] and points[1]["trip_ids"] == []
    assert points[0]["device_id"] == trip["trips"][0]["device_ids"][0] == points[1]["device_id"]
    assert points[0]["location"] == trip["trips"][0]["start_location"]  # the cell centre, not the point
    assert len({p["telemetry_id"] for p in points}) == 2 and all(uuid.UUID(p["telemetry_id"]) for p in points)
    elsewhere = await seeded.get(
        "/v1/supervision/telemetry", headers=regulator("110000"), params={"telemetry_time": R1_END_HOUR}
    )
    assert elsewhere.json()["telemetry"] == []  # a credential for Beijing sees no point in Shenzhen


async def test_near_real_time_endpoints(seeded, regulator):
    for path, key in (
        ("/v1/supervision/vehicles", "vehicles"),
        ("/v1/supervision/vehicles/status", "vehicles_status"),
        ("/v1/supervision/stops", "stops"),
    ):
        body = (await seeded.get(path, headers=regulator())).json()
        assert body["ttl"] == 60_000 and abs(body["last_updated"] - datetime.now(UTC).timestamp() * 1000) < 60_000
        assert body[key], path
    status = (await seeded.get("/v1/supervision/vehicles/status", headers=regulator())).json()["vehicles_status"]
    assert sorted(v["vehicle_state"] for v in status) == sorted(
        ["available"] * 4 + ["non_operational", "on_trip", "on_trip"]  # PB-4 is still on its trip
    )
    stops = (await seeded.get("/v1/supervision/stops", headers=regulator())).json()["stops"]
    assert sorted(s["num_vehicles_available"]["other"] for s in stops) == [0, 3, 4, 5]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    recent = await seeded.get(
        "/v1/supervision/events/recent",
        headers=regulator(),
        params={"start_time": now_ms - 3 * 3600_000, "end_time": now_ms},
    )
    assert recent.status_code == 200
    assert [e["event_types"] for e in recent.json()["events"]] == [["trip_start"]]  # R7, an hour ago
    for params in (
        {"start_time": now_ms - 3600_000},
        {"end_time": now_ms},
        {"start_time": now_ms - 15 * 86400_000, "end_time": now_ms},
        {"start_time": now_ms, "end_time": now_ms - 1000},
        {"start_time": "x", "end_time": now_ms},
    ):
        response = await seeded.get("/v1/supervision/events/recent", headers=regulator(), params=params)
        assert response.status_code == 400 and response.json()["code"] == "bad_param", params


async def test_region_scoped_credential_sees_its_region_only(seeded, regulator):
    beijing = regulator("110000")
    assert (await seeded.get("/v1/supervision/trips", headers=beijing, params={"end_time": R1_END_HOUR})).json()[
        "trips"
    ] == []
    stops = (await seeded.get("/v1/supervision/stops", headers=beijing)).json()["stops"]
    assert [s["division"] for s in stops] == ["110101"]
    futian = regulator("440304")
    trips = (await seeded.get("/v1/supervision/trips", headers=futian, params={"end_time": R1_END_HOUR})).json()
    assert len(trips["trips"]) == 1


async def test_monthly_report_redacts_small_counts(seeded, regulator):
    response = await seeded.get("/v1/supervision/reports", headers=regulator(), params={"month": "2026-11"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["geography_id"] for r in rows} == {"440304", "440303", "440305", "110101"}
    assert all(r["trip_count"] == "-1" and r["rider_count"] == "-1" for r in rows)  # fewer than 10 each
    for month, status in (("2026-13", 400), (None, 400), ("2099-01", 404)):
        params = {} if month is None else {"month": month}
        assert (await seeded.get("/v1/supervision/reports", headers=regulator(), params=params)).status_code == status
    this_month = datetime.now(UTC).strftime("%Y-%m")
    assert (
        await seeded.get("/v1/supervision/reports", headers=regulator(), params={"month": this_month})
    ).status_code == 202


async def test_every_access_is_audited(client, regulator, db):
    async with db.connect() as conn:
        before = await conn.scalar(text("SELECT count(*) FROM supervision_access_log"))
    headers = regulator("440300")
    await client.get("/v1/supervision/stops", headers=headers)
    await client.get("/v1/supervision/trips", headers={**headers, "Accept": "application/json"})  # 406, still logged
    await client.get("/v1/supervision/trips", headers=headers, params={"end_time": "bad"})  # 400, still logged
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT path, query, regions, client_id FROM supervision_access_log ORDER BY id OFFSET :n"),
                {"n": before},
            )
        ).all()
    assert [(r.path, r.query, r.regions) for r in rows] == [
        ("/v1/supervision/stops", "", "440300"),
        ("/v1/supervision/trips", "", "440300"),
        ("/v1/supervision/trips", "end_time=bad", "440300"),
    ]
    assert all(r.client_id.startswith("key-") for r in rows)


async def test_no_user_id_rental_id_or_phone_number_in_any_answer(seeded, regulator, dataset):
    now = datetime.now(UTC)
    rentals = dataset.rentals(now)
    secrets = {str(u) for u in dataset.USERS.values()} | {u.hex for u in dataset.USERS.values()}
    secrets |= {str(r.rental_id) for r in rentals} | {r.rental_id.hex for r in rentals}
    hours = {hour(t) for r in rentals for t in (r.started_at, r.ended_at) if t < now - timedelta(hours=2)}
    now_ms = int(now.timestamp() * 1000)
    requests = [("/v1/supervision/trips", {"end_time": h}) for h in hours]
    requests += [("/v1/supervision/events/historical", {"event_time": h}) for h in hours]
    requests += [("/v1/supervision/telemetry", {"telemetry_time": h}) for h in hours]
    requests += [
        ("/v1/supervision/events/recent", {"start_time": now_ms - 86400_000, "end_time": now_ms}),
        ("/v1/supervision/vehicles", {}),
        ("/v1/supervision/vehicles/status", {}),
        ("/v1/supervision/stops", {}),
        ("/v1/supervision/reports", {"month": "2026-11"}),
    ]
    seen_trips = 0
    for path, params in requests:
        response = await seeded.get(path, headers=regulator(), params=params)
        assert response.status_code == 200, (path, params, response.text)
        body = response.text
        assert not any(s in body for s in secrets), (path, params)
        assert not PHONE.search(body), (path, params)
        if path.endswith("/trips"):
            seen_trips += len(response.json()["trips"])
    assert seen_trips == 5  # R1, R2, R3, R5, R6: the search covered every finished trip


async def test_deposits_held_refunds_requested_and_paid_within_what_time(client, bus, processed, regulator):
    """Last month: 24 users paid 99 yuan; 12 asked for it back on day 10 at noon; 7 refunds were paid 2 h
    later, 3 after 30 h, 2 not yet. Held now: the 12 who kept theirs (1,188 yuan). Paid: 10 of 12, 7
    within a day, median 7,200 s, p95 108,000 s (between the 9th and 10th fastest, both 30 h), longest
    108,000 s. The 2 unpaid are fewer than 10: reported as -1, as MDS reports redact small counts."""
    from contracts.events import DepositPaid, DepositRefunded, DepositRefundRequested

    first_of_this = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (first_of_this - timedelta(days=1)).replace(day=1)
    label = start.strftime("%Y-%m")
    users = [uuid.uuid4() for _ in range(24)]
    asked = start + timedelta(days=9, hours=12)
    events = [
        await bus.publish(
            DepositPaid(
                deposit_id=uuid.uuid4(), user_id=u, amount_fen=9900, channel="alipay", at=start + timedelta(days=4)
            ),
            str(u),
        )
        for u in users
    ]
    for n, user in enumerate(users[:12]):
        refund_id = uuid.uuid4()
        events.append(
            await bus.publish(
                DepositRefundRequested(
                    refund_id=refund_id, user_id=user, amount_fen=9900, source="user", requested_at=asked
                ),
                str(user),
            )
        )
        if n < 10:
            paid_at = asked + timedelta(hours=2 if n < 7 else 30)
            refunded = DepositRefunded(
                refund_id=refund_id, user_id=user, amount_fen=9900, requested_at=asked, paid_at=paid_at
            )
            events.append(await bus.publish(refunded, str(user)))
            events.append(await bus.publish(refunded, str(user)))  # a copy changes nothing
    await processed(events)

    now = await client.get("/v1/supervision/deposits", headers=regulator())
    assert now.status_code == 200, now.text
    assert now.headers["content-type"] == "application/vnd.mds+json;version=2.0"
    body = now.json()
    assert body["deposits"]["held"] == {"count": 12, "amount_fen": 118800}
    pending = body["deposits"]["refunds_pending"]
    assert (pending["count"], pending["amount_fen"]) == (-1, -1)
    assert pending["oldest_requested_at"] == int(asked.timestamp() * 1000)
    assert {"last_updated", "ttl"} <= set(body)

    monthly = await client.get("/v1/supervision/deposits/monthly", headers=regulator(), params={"month": label})
    assert monthly.status_code == 200, monthly.text
    assert monthly.json()["deposits"] == {
        "month": label,
        "currency": "CNY",
        "paid": {"count": 24, "amount_fen": 237600},
        "refunds_requested": {"count": 12, "amount_fen": 118800},
        "refunds_paid": {
            "count": 10,
            "amount_fen": 99000,
            "within_24h": 7,
            "seconds_to_pay": {"median": 7200, "p95": 108000, "max": 108000},
        },
        "refunds_unpaid": {"count": -1, "amount_fen": -1},
    }
    answers = now.text + monthly.text
    assert not any(str(u) in answers for u in users)
    this_month = first_of_this.strftime("%Y-%m")
    params = {"month": this_month}
    assert (await client.get("/v1/supervision/deposits/monthly", headers=regulator(), params=params)).status_code == 202
    for bad, status in (("2026-13", 400), (None, 400), ("2999-01", 404)):
        response = await client.get("/v1/supervision/deposits/monthly", headers=regulator(), params={"month": bad})
        assert response.status_code == status
    scoped = await client.get("/v1/supervision/deposits", headers=regulator("440300"))
    assert (scoped.status_code, scoped.json()["code"]) == (403, "not_regional")
