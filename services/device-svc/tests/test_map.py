"""6.1.4 map (nearest cabinets with rentable banks and a walking estimate, through the GiST index
on earth coordinates) and 6.1.10 return guidance; 6.2.1 bank identity forms."""

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from device_svc.geo.service import walking_estimate
from device_svc.provisioning.seed import bank_identity

pytestmark = pytest.mark.integration


def auth(signer):
    return {"Authorization": f"Bearer {signer.issue('00000000-0000-0000-0000-000000000001')}"}


def entry(fleet, cabinet_id):
    return next(c for c in fleet["cabinets"] if c["cabinet_id"] == cabinet_id)


async def test_nearby_cabinets_sorted_by_distance_with_counts(service, fleet, online, signer):
    await online("CAB-0001")
    here = entry(fleet, "CAB-0003")
    resp = await service.get(
        "/v1/cabinets/nearby", params={"lat": here["lat"], "lon": here["lon"], "radius_m": 5000}, headers=auth(signer)
    )
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert [c["id"] for c in items] == ["CAB-0003", "CAB-0002", "CAB-0001"]
    assert items[0]["distance_m"] == 0
    distances = [c["distance_m"] for c in items]
    assert distances == sorted(distances)
    assert 500 < distances[2] < 900  # two ~310 m steps east
    for c in items:
        assert c["walking_distance_m"] >= c["distance_m"]
        assert c["walking_minutes"] == walking_estimate(c["distance_m"])[1] or c["distance_m"] == 0
    cab1 = next(c for c in items if c["id"] == "CAB-0001")
    assert (cab1["banks_available"], cab1["free_slots"], cab1["online"]) == (5, 2, True)
    assert cab1["region"] == "Futian"
    # The radius limits; available_only drops cabinets without a rentable bank.
    near = await service.get(
        "/v1/cabinets/nearby", params={"lat": here["lat"], "lon": here["lon"], "radius_m": 100}, headers=auth(signer)
    )
    assert [c["id"] for c in near.json()["items"]] == ["CAB-0003"]
    only = await service.get(
        "/v1/cabinets/nearby",
        params={"lat": here["lat"], "lon": here["lon"], "radius_m": 5000, "available_only": "true", "limit": 2},
        headers=auth(signer),
    )
    assert [c["id"] for c in only.json()["items"]] == ["CAB-0003", "CAB-0002"]


async def test_map_uses_the_spatial_index(service, database_url):
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(
                row[0]
                for row in (
                    await conn.execute(
                        text(
                            "EXPLAIN SELECT id FROM cabinets WHERE earth_box(ll_to_earth(22.54, 114.05), 1000)"
                            " @> ll_to_earth(lat, lon)"
                        )
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    assert "ix_cabinets_earth" in plan


async def test_return_guidance_lists_online_cabinets_with_free_slots(service, fleet, online, signer):
    await online("CAB-0002")
    await online("CAB-0003")
    here = entry(fleet, "CAB-0001")
    resp = await service.get(
        "/v1/cabinets/return-guidance", params={"lat": here["lat"], "lon": here["lon"]}, headers=auth(signer)
    )
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert [c["id"] for c in items] == ["CAB-0002", "CAB-0003"]  # CAB-0001 is offline
    assert all(c["free_slots"] > 0 for c in items)


async def test_map_rejects_bad_coordinates(service, signer):
    bad = await service.get("/v1/cabinets/nearby", params={"lat": 91, "lon": 0}, headers=auth(signer))
    assert bad.status_code == 422
    assert (await service.get("/v1/cabinets/nearby", params={"lat": 1, "lon": 1})).status_code == 401


async def test_eject_by_qr_code_or_nfc_tag(service, online, eject):
    cab = await online("CAB-0001")
    await eject(bank_identity("PB-000003")["qr_code"])
    cmd = await cab.receive()
    assert (cmd.type, cmd.bank_id, cmd.slot) == ("eject", "PB-000003", 3)
