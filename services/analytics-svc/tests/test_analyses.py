"""The 6.3.6 analyses on the small data set of analytics_data.py, through the real broker and
database, against answers computed by hand (the table in analytics_data's docstring)."""

import csv
import io
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from contracts.regions import cell_parent

pytestmark = pytest.mark.integration

WEEK = {"from": "2026-11-02", "to": "2026-11-08"}
FUTIAN, LUOHU, NANSHAN, DONGCHENG = "440304", "440303", "440305", "110101"


async def get_json(client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(f"/v1/analytics/{path}", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_analyses_need_the_analytics_permission(client, auth, admin):
    for path in ("banks-per-region", "active-users", "rentals", "regions", "heat-map", "flows"):
        url = f"/v1/analytics/{path}"
        assert (await client.get(url)).status_code == 401
        assert (await client.get(url, headers=auth(uuid.uuid4()))).status_code == 403
        for role in ("support", "finance", "field_maintenance"):
            assert (await client.get(url, headers=admin(role))).status_code == 403
        for role in ("super_admin", "operator", "analyst"):
            assert (await client.get(url, headers=admin(role))).status_code == 200, (path, role)


async def test_bad_filters_are_4xx_problems(client, admin):
    headers = admin("analyst")
    cases = [
        ("rentals", {"from": "2026-11-08", "to": "2026-11-01"}, 400, "invalid_period"),
        ("rentals", {"from": "2024-01-01", "to": "2026-11-01"}, 400, "invalid_period"),
        ("rentals", {"region": "4403"}, 422, "validation_error"),
        ("rentals", {"granularity": "minute"}, 422, "validation_error"),
        ("banks-per-region", {"level": "street"}, 422, "validation_error"),
        ("heat-map", {"resolution": 12}, 422, "validation_error"),
        ("active-users", {"from": "yesterday"}, 422, "validation_error"),
    ]
    for path, params, status, code in cases:
        response = await client.get(f"/v1/analytics/{path}", headers=headers, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code


async def test_rentals_per_hour_of_day_and_per_day(seeded, admin):
    headers = admin("analyst")
    body = await get_json(seeded, "rentals", headers, **WEEK)
    hours = {int(r["bucket"]): r["rentals"] for r in body["rows"]}
    assert len(hours) == 24
    assert {h: n for h, n in hours.items() if n} == {7: 1, 9: 3, 18: 1}  # R6 | R1 R2 R4 | R3
    body = await get_json(seeded, "rentals", headers, granularity="day", **WEEK)
    assert [(r["bucket"], r["rentals"]) for r in body["rows"]] == [
        ("2026-11-02", 2),
        ("2026-11-03", 1),
        ("2026-11-04", 1),
        ("2026-11-05", 0),
        ("2026-11-06", 1),  # R6 started on 11-05 in UTC, on 11-06 in Shanghai
        ("2026-11-07", 0),
        ("2026-11-08", 0),
    ]
    futian = await get_json(seeded, "rentals", headers, region=FUTIAN, **WEEK)
    assert {int(r["bucket"]): r["rentals"] for r in futian["rows"] if r["rentals"]} == {7: 1, 9: 2}
    shenzhen = await get_json(seeded, "rentals", headers, region="440300", granularity="hour", **WEEK)
    assert [(r["bucket"], r["rentals"]) for r in shenzhen["rows"]] == [
        ("2026-11-02T09:00:00+08:00", 2),
        ("2026-11-03T18:00:00+08:00", 1),
        ("2026-11-04T09:00:00+08:00", 1),
        ("2026-11-06T07:00:00+08:00", 1),
    ]
    beijing = await get_json(seeded, "rentals", headers, region="110000", granularity="day", **WEEK)
    assert sum(r["rentals"] for r in beijing["rows"]) == 0  # R5 is on 11-09, outside the week


async def test_active_regions_ranked_and_heat_map(seeded, admin, dataset):
    headers = admin("operator")
    body = await get_json(seeded, "regions", headers, **WEEK)
    assert [(r["rank"], r["division_code"], r["name"], r["rentals"]) for r in body["rows"]] == [
        (1, FUTIAN, "Futian", 3),
        (2, LUOHU, "Luohu", 1),
        (3, NANSHAN, "Nanshan", 1),
    ]
    body = await get_json(seeded, "regions", headers, level="city", **{"from": "2026-11-01", "to": "2026-11-30"})
    assert [(r["division_code"], r["rentals"]) for r in body["rows"]] == [("440300", 5), ("110100", 1)]
    body = await get_json(seeded, "heat-map", headers, **WEEK)
    assert [(r["cell"], r["rentals"]) for r in body["rows"]] == [
        (dataset.region("A").cell, 3),
        *sorted([(dataset.region("B").cell, 1), (dataset.region("C").cell, 1)]),
    ]
    assert abs(body["rows"][0]["lat"] - 22.54) < 0.01 and abs(body["rows"][0]["lon"] - 114.05) < 0.01
    coarse = await get_json(seeded, "heat-map", headers, resolution=5, **WEEK)
    parents = Counter({cell_parent(dataset.region(c).cell, 5): 0 for c in "ABC"})
    for cabinet, n in (("A", 3), ("B", 1), ("C", 1)):
        parents[cell_parent(dataset.region(cabinet).cell, 5)] += n
    assert {r["cell"]: r["rentals"] for r in coarse["rows"]} == dict(parents)


async def test_origin_destination_matrix(seeded, admin):
    headers = admin("analyst")
    body = await get_json(seeded, "flows", headers, **WEEK)
    assert [(r["origin"], r["destination"], r["rentals"]) for r in body["rows"]] == [
        (FUTIAN, FUTIAN, 2),  # R2, R6
        (LUOHU, NANSHAN, 1),  # R3
        (FUTIAN, LUOHU, 1),  # R1 (R4 is not back)
    ]
    luohu = await get_json(seeded, "flows", headers, region=LUOHU, **WEEK)
    assert [(r["origin_name"], r["destination_name"], r["rentals"]) for r in luohu["rows"]] == [
        ("Luohu", "Nanshan", 1),
        ("Futian", "Luohu", 1),
    ]
    city = await get_json(seeded, "flows", headers, level="city", **WEEK)
    assert [(r["origin"], r["destination"], r["rentals"]) for r in city["rows"]] == [("440300", "440300", 4)]


async def test_active_users_daily_weekly_monthly(seeded, admin):
    headers = admin("analyst")
    body = await get_json(seeded, "active-users", headers, **WEEK)
    assert [(r["period_start"], r["active"], r["new"], r["returning"]) for r in body["rows"]] == [
        ("2026-11-02", 2, 2, 0),  # U1, U2
        ("2026-11-03", 1, 0, 1),  # U1 again
        ("2026-11-04", 1, 1, 0),  # U3
        ("2026-11-06", 1, 1, 0),  # U4
    ]
    weekly = await get_json(seeded, "active-users", headers, granularity="week", **WEEK)
    assert [(r["period_start"], r["active"], r["new"]) for r in weekly["rows"]] == [("2026-11-02", 4, 4)]
    month = {"from": "2026-11-01", "to": "2026-11-30"}
    monthly = await get_json(seeded, "active-users", headers, granularity="month", **month)
    assert [(r["period_start"], r["active"], r["new"]) for r in monthly["rows"]] == [("2026-11-01", 4, 4)]
    week2 = await get_json(
        seeded, "active-users", headers, granularity="week", **{"from": "2026-11-09", "to": "2026-11-15"}
    )
    assert [(r["active"], r["new"], r["returning"]) for r in week2["rows"]] == [(1, 0, 1)]  # U2 came back (R5)
    futian = await get_json(seeded, "active-users", headers, region=FUTIAN, granularity="week", **WEEK)
    assert [(r["active"], r["new"]) for r in futian["rows"]] == [(3, 3)]  # U1, U2, U4 borrowed in Futian


async def test_banks_per_region(seeded, admin):
    headers = admin("operator")
    body = await get_json(seeded, "banks-per-region", headers)
    rows = {r["division_code"]: (r["in_cabinets"], r["rented"], r["faulty"], r["lost"]) for r in body["rows"]}
    assert rows == {
        DONGCHENG: (4, 0, 0, 0),
        LUOHU: (3, 1, 0, 0),  # R7 out for an hour
        FUTIAN: (5, 0, 1, 0),  # PB-2 overheated after its return
        NANSHAN: (0, 0, 0, 1),  # R4 out for a month
    }
    assert body["lost_after_hours"] == 72
    city = await get_json(seeded, "banks-per-region", headers, region="440300", level="city")
    assert [
        (r["division_code"], r["name"], r["in_cabinets"], r["rented"], r["faulty"], r["lost"]) for r in city["rows"]
    ] == [("440300", "Shenzhen", 8, 1, 1, 1)]


async def test_csv_export_of_each_analysis(seeded, admin):
    headers = admin("analyst")
    expected_header = {
        "banks-per-region": "division_code,name,in_cabinets,rented,faulty,lost",
        "active-users": "period_start,active,new,returning",
        "rentals": "bucket,rentals",
        "regions": "rank,division_code,name,rentals",
        "heat-map": "cell,lat,lon,rentals",
        "flows": "origin,origin_name,destination,destination_name,rentals",
    }
    for path, header in expected_header.items():
        response = await seeded.get(f"/v1/analytics/{path}", headers=headers, params={"format": "csv", **WEEK})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert f'filename="{path}' in response.headers["content-disposition"] or path in ("rentals", "regions")
        lines = response.text.splitlines()
        assert lines[0] == header
        assert len(lines) > 1
    response = await seeded.get("/v1/analytics/regions", headers=headers, params={"format": "csv", **WEEK})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["division_code"], r["rentals"]) for r in rows] == [(FUTIAN, "3"), (LUOHU, "1"), (NANSHAN, "1")]


async def test_no_user_id_in_any_answer(seeded, admin, dataset):
    headers = admin("analyst")
    for path in ("banks-per-region", "active-users", "rentals", "regions", "heat-map", "flows"):
        for fmt in ("json", "csv"):
            text = (await seeded.get(f"/v1/analytics/{path}", headers=headers, params={"format": fmt, **WEEK})).text
            assert not any(str(u) in text for u in dataset.USERS.values()), path
