"""Public registry API and operations endpoints."""

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from device_svc.sweepers import mark_offline

pytestmark = pytest.mark.integration


def auth(signer, **kwargs):
    return {"Authorization": f"Bearer {signer.issue('00000000-0000-0000-0000-000000000001', **kwargs)}"}


async def test_cabinet_list_detail_and_bank(service, online, signer):
    await online("CAB-0001")
    resp = await service.get("/v1/cabinets", headers=auth(signer))
    assert resp.status_code == 200
    items = {c["id"]: c for c in resp.json()["items"]}
    assert set(items) == {"CAB-0001", "CAB-0002", "CAB-0003"}
    cab1 = items["CAB-0001"]
    assert cab1["online"] is True
    assert items["CAB-0002"]["online"] is False
    assert cab1["slot_count"] == 8
    assert cab1["free_slots"] == 2
    assert cab1["banks_available"] == 5  # 6 banks, PB-000002 at 10%
    assert resp.json()["next_after"] is None
    # A page at a time (issue 15): the page's last id asks for the next.
    first = (await service.get("/v1/cabinets", params={"limit": 2}, headers=auth(signer))).json()
    assert ([c["id"] for c in first["items"]], first["next_after"]) == (["CAB-0001", "CAB-0002"], "CAB-0002")
    rest = await service.get("/v1/cabinets", params={"limit": 2, "after": "CAB-0002"}, headers=auth(signer))
    assert ([c["id"] for c in rest.json()["items"]], rest.json()["next_after"]) == (["CAB-0003"], None)
    assert (await service.get("/v1/cabinets", params={"limit": 1001}, headers=auth(signer))).status_code == 422
    detail = (await service.get("/v1/cabinets/CAB-0001", headers=auth(signer, kind="admin", roles=["operator"]))).json()
    assert detail["firmware"] == "test-fw"
    assert [s["slot"] for s in detail["slots"]] == list(range(1, 9))
    assert detail["slots"][1] == {
        "slot": 2,
        "bank_id": "PB-000002",
        "battery_pct": 10,
        "fault": None,
        "rentable": False,
    }
    assert detail["slots"][7]["bank_id"] is None
    bank = (await service.get("/v1/banks/PB-000002", headers=auth(signer))).json()
    assert (bank["state"], bank["battery_pct"], bank["cabinet_id"], bank["slot"]) == ("in_cabinet", 10, "CAB-0001", 2)


async def test_api_errors(service, signer):
    assert (await service.get("/v1/cabinets")).status_code == 401
    assert (await service.get("/v1/cabinets", headers=auth(signer, kind="client"))).status_code == 403
    missing = await service.get("/v1/cabinets/CAB-9999", headers=auth(signer))
    assert missing.status_code == 404
    assert missing.json()["code"] == "cabinet_not_found"
    assert (await service.get("/v1/banks/PB-999999", headers=auth(signer))).json()["code"] == "bank_not_found"
    assert (await service.get("/v1/banks/bad%20id", headers=auth(signer))).status_code == 422


async def test_readyz_checks_database_kafka_and_mqtt(service):
    body = (await service.get("/readyz")).json()
    assert {"database", "kafka", "mqtt", "consumers"} <= set(body["checks"])
    assert body["status"] == "ok"


async def test_last_will_and_silence_mark_cabinets_offline(service, online, cabinets, tap, database_url):
    cab = await online("CAB-0001")
    await cab.send("status", {"type": "status", "online": False})
    changed = await tap.wait_for("device.cabinet.status_changed", cabinet_id="CAB-0001", online=False)
    assert changed.reason == "last_will"
    cab3 = await online("CAB-0003")
    assert cab3 is not None
    engine = create_async_engine(database_url)
    try:
        from kit.db import make_sessionmaker

        published = []

        async def publish(session, data, key):
            published.append(data)
            return await service._transport.app.state.runtime.publish(session, data, key=key)

        assert await mark_offline(make_sessionmaker(engine), publish, offline_after_s=0) >= 1
    finally:
        await engine.dispose()
    assert [(e.type, getattr(e, "cabinet_id", None) or e.device_id) for e in published] == [
        ("device.cabinet.status_changed", "CAB-0003"),
        ("device.presence.changed", "CAB-0003"),
    ]
    silent = await tap.wait_for("device.cabinet.status_changed", cabinet_id="CAB-0003", online=False)
    assert silent.reason == "no_message"
    # The same transitions for every device kind on device.presence.changed (keyed by device id).
    will = await tap.wait_for("device.presence.changed", device_id="CAB-0001", online=False)
    assert (will.device_kind, will.reason, will.last_seen_at is not None) == ("cabinet", "last_will", True)
    quiet = await tap.wait_for("device.presence.changed", device_id="CAB-0003", online=False)
    assert quiet.reason == "heartbeat_silence"


async def test_presence_counts_who_was_heard_since_a_moment_and_names_the_silent(service, online, signer):
    ops = auth(signer, kind="admin", roles=["operator"])
    assert (await service.get("/v1/ops/presence", headers=auth(signer))).status_code == 403
    assert (await service.get("/v1/ops/presence", params={"heard_since": "yesterday"}, headers=ops)).status_code == 422
    moment = datetime.now(UTC).isoformat()  # same machine, same clock as device-svc
    await online("CAB-0003")
    after = (
        await service.get("/v1/ops/presence", params={"heard_since": moment, "silent_limit": 10}, headers=ops)
    ).json()
    assert after["cabinets"] == 3
    assert after["heard"] >= 1 and "CAB-0003" not in after["silent"]
    assert after["silent_total"] == after["cabinets"] - after["heard"]
    assert len(after["silent"]) == after["silent_total"]
    assert after["online"] >= after["heard"]
    capped = (
        await service.get("/v1/ops/presence", params={"heard_since": moment, "silent_limit": 0}, headers=ops)
    ).json()
    assert capped["silent"] == [] and capped["silent_total"] == after["silent_total"]


async def test_silence_allows_for_an_intake_that_reads_behind_its_devices(service, online, tap, database_url):
    """A heartbeat that waited two minutes in the broker's queue for us (device time two minutes before we
    read it) says the telemetry intake is that far behind: the offline sweeper allows that much more
    silence, so a cabinet is not shown offline because device-svc was slow to read it (issue 9)."""
    from datetime import timedelta

    from device_svc.sweepers import mark_offline_until_next
    from kit.db import make_sessionmaker
    from kit.testing import eventually

    from .conftest import now_ms

    cab = await online("CAB-0003")
    telemetry = service._transport.app.state.runtime.extras["telemetry"]
    beat = {"type": "heartbeat", "msg_id": cab.next_id(), "ts": now_ms(-timedelta(seconds=120)), "rssi_dbm": -60}
    await cab.send("heartbeat", beat)

    async def behind() -> bool:
        return telemetry.behind_s > 100

    await eventually(behind, what="the intake's lag measured from the late heartbeat")
    runtime = service._transport.app.state.runtime
    published = []

    async def publish(session, data, key):
        published.append(data)
        return await runtime.publish(session, data, key=key)

    engine = create_async_engine(database_url)
    try:
        sessionmaker = make_sessionmaker(engine)
        # offline_after_s=0: any cabinet is overdue, unless its silence may be our own delay.
        await mark_offline_until_next(sessionmaker, publish, 0, lambda: telemetry.behind_s)
        assert "CAB-0003" not in [getattr(e, "device_id", None) for e in published]
        # Without the allowance the same silence takes it offline.
        await mark_offline_until_next(sessionmaker, publish, 0)
    finally:
        await engine.dispose()
    assert ("device.presence.changed", "CAB-0003") in [(e.type, getattr(e, "device_id", None)) for e in published]
