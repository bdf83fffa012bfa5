"""Banks with their own module: presence, telemetry to Kafka and the current-state store, late
reports, alarms (movement while not rented with a ring, high temperature, maintenance due),
position freshness (7.2) and the operations views."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from device_svc.sweepers import flag_overdue_positions, mark_banks_offline
from device_svc.telemetry.store import BankState, Presence, write_states
from kit.db import make_sessionmaker, unit_of_work
from kit.testing import eventually

pytestmark = pytest.mark.integration


def now_ms():
    return int(datetime.now(UTC).timestamp() * 1000)


def bank_report(device, ts, **fields):
    return {"type": "bank_report", "msg_id": device.next_id(), "ts": ts, **fields}


OPS = {"kind": "admin", "roles": ["operator"]}


def auth(signer, **kwargs):
    return {"Authorization": f"Bearer {signer.issue('00000000-0000-0000-0000-000000000009', **kwargs)}"}


async def ops_bank(service, signer, bank_id):
    resp = await service.get("/v1/ops/banks", params={"has_module": "true"}, headers=auth(signer, **OPS))
    assert resp.status_code == 200, resp.text
    return next(b for b in resp.json()["items"] if b["id"] == bank_id)


async def wait_bank(service, signer, bank_id, predicate, timeout=5.0):
    bank = None
    for _ in range(int(timeout / 0.05)):
        bank = await ops_bank(service, signer, bank_id)
        if predicate(bank):
            return bank
        await asyncio.sleep(0.05)
    raise AssertionError(f"{bank_id} never matched: {bank}")


async def alarms(service, signer):
    resp = await service.get("/v1/ops/alarms", headers=auth(signer, **OPS))
    assert resp.status_code == 200, resp.text
    return {(a["device_id"], a["kind"]) for a in resp.json()["items"]}


async def test_bank_report_reaches_kafka_and_the_state_store(service, bank_device, tap, signer):
    bank = await bank_device("PB-000001")
    await bank.send("status", {"type": "status", "online": True})
    ts = now_ms()
    report = bank_report(
        bank,
        ts,
        position={"lat": 22.5401, "lon": 114.0502, "accuracy_m": 8},
        battery_pct=77,
        charging=False,
        charge_mah_total=120_000,
        discharge_mah_total=110_000,
        charge_cycles=31,
        health_pct=97,
        temperature_c=24.5,
    )
    await bank.send("bank_report", report)
    await bank.send("heartbeat", {"type": "heartbeat", "msg_id": bank.next_id(), "ts": ts, "rssi_dbm": -77})
    event = await tap.wait_for("device.telemetry.reported", device_id="PB-000001", device_kind="bank")
    assert (event.battery_pct, event.lat, event.lon, event.charge_cycles) == (77, 22.5401, 114.0502, 31)
    env = next(e for e in tap.events if e.type == "device.telemetry.reported" and e.data is event)
    assert env.key == "PB-000001"
    state = await wait_bank(service, signer, "PB-000001", lambda b: b["position_at"] is not None)
    assert state["online"] is True
    assert (state["lat"], state["lon"], state["battery_pct"]) == (22.5401, 114.0502, 77)
    assert (state["charge_cycles"], state["health_pct"], state["temperature_c"]) == (31, 97, 24.5)
    assert (state["charge_mah_total"], state["discharge_mah_total"]) == (120_000, 110_000)
    assert state["qr_code"] == "https://pb.example/q/PB-000001"
    assert state["days_in_service"] == 0
    devices = (await service.get("/v1/ops/devices", params={"kind": "bank"}, headers=auth(signer, **OPS))).json()
    mine = next(d for d in devices["items"] if d["device_id"] == "PB-000001")
    for _ in range(100):
        if mine["rssi_dbm"] == -77:
            break
        await asyncio.sleep(0.05)
        devices = (await service.get("/v1/ops/devices", params={"kind": "bank"}, headers=auth(signer, **OPS))).json()
        mine = next(d for d in devices["items"] if d["device_id"] == "PB-000001")
    assert (mine["online"], mine["rssi_dbm"]) == (True, -77)
    assert mine["last_seen_at"] is not None


async def test_late_and_out_of_order_reports_never_overwrite_newer_state(service, bank_device, tap, signer):
    bank = await bank_device("PB-000001")
    now = now_ms()
    await bank.send("bank_report", bank_report(bank, now, position={"lat": 22.55, "lon": 114.06}, battery_pct=80))
    await wait_bank(service, signer, "PB-000001", lambda b: b["battery_pct"] == 80)
    # An older report arrives late (a delayed or re-sent message): it goes to the data feed only.
    late = bank_report(bank, now - 60_000, position={"lat": 22.0, "lon": 114.0}, battery_pct=30, moving=True)
    await bank.send("bank_report", late)
    await tap.wait_for("device.telemetry.reported", device_id="PB-000001", battery_pct=30)
    await asyncio.sleep(0.6)  # several flush intervals
    state = await ops_bank(service, signer, "PB-000001")
    assert (state["battery_pct"], state["lat"], state["lon"]) == (80, 22.55, 114.06)
    assert not tap.matching("device.alarm.raised", device_id="PB-000001")  # a late "moving" raises nothing
    # A newer report without a position keeps the stored position.
    await bank.send("bank_report", bank_report(bank, now + 1000, battery_pct=79))
    state = await wait_bank(service, signer, "PB-000001", lambda b: b["battery_pct"] == 79)
    assert (state["lat"], state["lon"]) == (22.55, 114.06)


async def test_batched_writes_are_ordered_by_device_time(service, database_url):
    """The store's SQL guard, on its own: the older of two writes loses whichever comes second."""
    engine = create_async_engine(database_url)
    try:
        sessionmaker = make_sessionmaker(engine)
        t0 = datetime.now(UTC)
        async with unit_of_work(sessionmaker) as session:
            changed = await write_states(
                session,
                {"PB-000001": Presence(t0, -60), "PB-000003": Presence(t0)},
                {"PB-000001": BankState(at=t0, battery_pct=50), "PB-000003": BankState(at=t0, battery_pct=51)},
            )
        assert changed == 4
        async with unit_of_work(sessionmaker) as session:
            changed = await write_states(
                session,
                {"PB-000001": Presence(t0 - timedelta(seconds=5), -99)},
                {
                    "PB-000001": BankState(at=t0 - timedelta(seconds=5), battery_pct=10),
                    "PB-000003": BankState(at=t0 + timedelta(seconds=5), battery_pct=52),
                },
            )
        assert changed == 1
        async with engine.connect() as conn:
            rows = dict(
                (
                    await conn.execute(text("SELECT id, battery_pct FROM banks WHERE id IN ('PB-000001', 'PB-000003')"))
                ).all()
            )
            rssi = (await conn.execute(text("SELECT rssi_dbm FROM banks WHERE id = 'PB-000001'"))).scalar_one()
        assert rows == {"PB-000001": 50, "PB-000003": 52}
        assert rssi == -60
    finally:
        await engine.dispose()


async def test_moved_while_not_rented_raises_one_alarm_and_rings(service, bank_device, tap, signer):
    bank = await bank_device("PB-000001")
    before = REGISTRY.get_sample_value("pb_device_alarms_raised_total", {"kind": "moved_while_idle"}) or 0.0
    await bank.send("bank_report", bank_report(bank, now_ms(), moving=True, alarms=["moved"]))
    alarm = await tap.wait_for("device.alarm.raised", device_id="PB-000001", kind="moved_while_idle")
    assert "CAB-0001" in alarm.detail
    ring = await bank.receive()
    assert ring.type == "ring"
    assert ring.duration_s == 10
    assert ("PB-000001", "moved_while_idle") in await alarms(service, signer)
    # Still moving: no second alarm while the first is open.
    await bank.send("bank_report", bank_report(bank, now_ms() + 1, moving=True))
    await tap.wait_for("device.telemetry.reported", device_id="PB-000001", moving=True)
    await asyncio.sleep(0.3)
    assert len(tap.matching("device.alarm.raised", device_id="PB-000001", kind="moved_while_idle")) == 1
    after = REGISTRY.get_sample_value("pb_device_alarms_raised_total", {"kind": "moved_while_idle"})
    assert after == before + 1
    # Operations resolves it.
    resp = await service.post(
        "/v1/ops/alarms/resolve",
        json={"device_id": "PB-000001", "kind": "moved_while_idle"},
        headers=auth(signer, kind="admin", roles=["field_maintenance"]),
    )
    assert (resp.status_code, resp.json()["kind"]) == (200, "moved_while_idle")
    assert ("PB-000001", "moved_while_idle") not in await alarms(service, signer)


async def test_a_rented_bank_may_move(service, bank_device, tap, database_url):
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE banks SET state = 'rented', cabinet_id = NULL WHERE id = 'PB-000002'"))
    finally:
        await engine.dispose()
    bank = await bank_device("PB-000002")
    await bank.send("bank_report", bank_report(bank, now_ms(), moving=True, position={"lat": 22.6, "lon": 114.1}))
    await tap.wait_for("device.telemetry.reported", device_id="PB-000002", moving=True)
    await asyncio.sleep(0.3)
    assert not tap.matching("device.alarm.raised", device_id="PB-000002")
    with pytest.raises(TimeoutError):
        await bank.receive(timeout=0.3)


async def test_high_temperature_and_maintenance_due(service, bank_device, tap, signer):
    bank = await bank_device("PB-000001")
    await bank.send("bank_report", bank_report(bank, now_ms(), temperature_c=71.0, charge_cycles=960, health_pct=90))
    await tap.wait_for("device.alarm.raised", device_id="PB-000001", kind="high_temperature")
    due = await tap.wait_for("device.alarm.raised", device_id="PB-000001", kind="maintenance_due")
    assert "960 charge cycles" in due.detail
    open_alarms = await alarms(service, signer)
    assert {("PB-000001", "high_temperature"), ("PB-000001", "maintenance_due")} <= open_alarms
    flagged = (
        await service.get("/v1/ops/banks", params={"maintenance_due": "true"}, headers=auth(signer, **OPS))
    ).json()
    assert [b["id"] for b in flagged["items"]] == ["PB-000001"]
    tasks = (await service.get("/v1/ops/maintenance-tasks", headers=auth(signer, **OPS))).json()["items"]
    assert any(t["device_id"] == "PB-000001" and "maintenance due" in t["task"] for t in tasks)
    # Cooled down: the temperature alarm closes; low health alone also flags a bank.
    bank2 = await bank_device("PB-000002")
    await bank.send("bank_report", bank_report(bank, now_ms() + 1, temperature_c=30.0))
    await bank2.send("bank_report", bank_report(bank2, now_ms(), health_pct=70))
    low = await tap.wait_for("device.alarm.raised", device_id="PB-000002", kind="maintenance_due")
    assert "health 70%" in low.detail
    for _ in range(100):
        if ("PB-000001", "high_temperature") not in await alarms(service, signer):
            break
        await asyncio.sleep(0.05)
    assert ("PB-000001", "high_temperature") not in await alarms(service, signer)


async def test_idle_bank_without_a_position_for_4_hours_is_flagged(service, bank_device, tap, signer, database_url):
    engine = create_async_engine(database_url)
    try:
        five_hours_ago = datetime.now(UTC) - timedelta(hours=5)
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE banks SET position_at = :t, state_changed_at = :t WHERE has_module"), {"t": five_hours_ago}
            )
            # A bank returned an hour ago starts a fresh period.
            await conn.execute(
                text("UPDATE banks SET state_changed_at = :t WHERE id = 'PB-000002'"),
                {"t": datetime.now(UTC) - timedelta(hours=1)},
            )
        published = []

        async def publish(session, data, key):
            published.append(data)
            return await service._transport.app.state.runtime.publish(session, data, key=key)

        sessionmaker = make_sessionmaker(engine)
        assert await flag_overdue_positions(sessionmaker, publish, 4 * 3600) == ["PB-000001"]
        assert await flag_overdue_positions(sessionmaker, publish, 4 * 3600) == []  # flagged once
        assert [(e.device_id, e.kind) for e in published] == [("PB-000001", "position_overdue")]
        await tap.wait_for("device.alarm.raised", device_id="PB-000001", kind="position_overdue")
        assert ("PB-000001", "position_overdue") in await alarms(service, signer)
        # A fresh position closes it.
        bank = await bank_device("PB-000001")
        await bank.send("bank_report", bank_report(bank, now_ms(), position={"lat": 22.54, "lon": 114.05}))
        for _ in range(100):
            if ("PB-000001", "position_overdue") not in await alarms(service, signer):
                break
            await asyncio.sleep(0.05)
        assert ("PB-000001", "position_overdue") not in await alarms(service, signer)
        # Silent modules are shown offline.
        assert await mark_banks_offline(sessionmaker, publish, offline_after_s=0) >= 1
        devices = (await service.get("/v1/ops/devices", params={"kind": "bank"}, headers=auth(signer, **OPS))).json()
        assert all(d["online"] is False for d in devices["items"])
    finally:
        await engine.dispose()


async def test_offline_bank_gets_an_immediate_error_for_ring(service, bank_device, tap, signer):
    headers = auth(signer, **OPS)
    resp = await service.post("/v1/ops/banks/PB-000001/ring", headers=headers)
    assert resp.status_code == 409
    assert resp.json()["code"] == "device_offline"
    bank = await bank_device("PB-000001")
    await bank.send("status", {"type": "status", "online": True})
    for _ in range(100):
        resp = await service.post("/v1/ops/banks/PB-000001/ring", headers=headers)
        if resp.status_code == 202:
            break
        await asyncio.sleep(0.05)
    assert resp.status_code == 202, resp.text
    ring = await bank.receive()
    assert (ring.type, ring.cmd_id) == ("ring", resp.json()["cmd_id"])
    # The last will takes it offline again.
    await bank.send("status", {"type": "status", "online": False})
    for _ in range(100):
        resp = await service.post("/v1/ops/banks/PB-000001/ring", headers=headers)
        if resp.status_code == 409:
            break
        await asyncio.sleep(0.05)
    assert resp.json()["code"] == "device_offline"
    assert ("PB-000001", "bank_offline") in await alarms(service, signer)
    no_module = await service.post("/v1/ops/banks/PB-000003/ring", headers=headers)
    assert no_module.json()["code"] == "bank_has_no_module"


async def test_banks_cannot_send_cabinet_messages_or_act_for_others(service, bank_device, tap, clock, fleet):
    bank = await bank_device("PB-000001")
    hello = {"type": "hello", "msg_id": bank.next_id(), "ts": clock(), "firmware": "x", "slot_count": 1, "slots": []}
    await bank.send("hello", hello)
    rejected = await tap.wait_for("device.message.rejected", device_id="PB-000001", reason="invalid_payload")
    assert rejected.mqtt_topic.endswith("/up/hello")
    # Publishing as the other bank: the broker's ACL drops it; device-svc never sees it.
    await bank.send(None, bank_report(bank, clock(), battery_pct=1), topic="pb/v1/devices/PB-000002/up/bank_report")
    await asyncio.sleep(0.5)
    assert not tap.matching("device.telemetry.reported", device_id="PB-000002")


async def test_night_light_and_operations_access(service, online, signer):
    cab = await online("CAB-0001")
    headers = auth(signer, kind="admin", roles=["field_maintenance"])
    resp = await service.post("/v1/ops/cabinets/CAB-0001/light", json={"on": True, "duration_s": 30}, headers=headers)
    assert resp.status_code == 202, resp.text
    light = await cab.receive()
    assert (light.type, light.on, light.duration_s) == ("light", True, 30)
    offline = await service.post("/v1/ops/cabinets/CAB-0002/light", json={}, headers=headers)
    assert (offline.status_code, offline.json()["code"]) == (409, "device_offline")
    user = auth(signer)
    assert (await service.get("/v1/ops/alarms", headers=user)).status_code == 403
    assert (await service.get("/v1/ops/alarms", headers=auth(signer, kind="admin", roles=["admin"]))).status_code == 403
    assert (await service.get("/v1/ops/alarms")).status_code == 401
    tasks = (await service.get("/v1/ops/maintenance-tasks", headers=headers)).json()["items"]
    assert {"CAB-0002", "CAB-0003"} <= {t["device_id"] for t in tasks if t["task"].startswith("cabinet offline")}


async def test_state_changes_are_recorded_with_a_reason(service, signer):
    headers = auth(signer, **OPS)
    resp = await service.post(
        "/v1/ops/banks/PB-000003/state", json={"state": "maintenance", "reason": "cracked case"}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "maintenance"
    bad = await service.post("/v1/ops/banks/PB-000003/state", json={"state": "rented", "reason": "x"}, headers=headers)
    assert bad.status_code == 422
    retired = await service.post(
        "/v1/ops/banks/PB-000003/state", json={"state": "retired", "reason": "end of life"}, headers=headers
    )
    assert retired.json()["state"] == "retired"
    assert retired.json()["cabinet_id"] is None
    again = await service.post(
        "/v1/ops/banks/PB-000003/state", json={"state": "maintenance", "reason": "x"}, headers=headers
    )
    assert (again.status_code, again.json()["code"]) == (409, "bad_state_transition")
    history = (await service.get("/v1/ops/banks/PB-000003/transitions", headers=headers)).json()["items"]
    assert [(h["from_state"], h["to_state"]) for h in history] == [
        (None, "in_cabinet"),
        ("in_cabinet", "maintenance"),
        ("maintenance", "retired"),
    ]
    assert history[1]["reason"].startswith("cracked case (by ")
    listed = (await service.get("/v1/ops/banks", params={"state": "retired"}, headers=headers)).json()["items"]
    assert [b["id"] for b in listed] == ["PB-000003"]
    newest = (
        await service.get(
            "/v1/ops/banks/PB-000003/transitions", params={"order": "newest", "limit": 2}, headers=headers
        )
    ).json()["items"]
    assert [h["to_state"] for h in newest] == ["retired", "maintenance"]


async def test_one_bank_and_the_bank_list_paged_and_searched_server_side(service, signer):
    """The console's bank pages at any fleet size: one bank by id, keyset pages, an id prefix or a code."""
    headers = auth(signer, **OPS)
    one = await service.get("/v1/ops/banks/PB-000002", headers=headers)
    assert one.status_code == 200, one.text
    assert (one.json()["id"], one.json()["cabinet_id"], one.json()["has_module"]) == ("PB-000002", "CAB-0001", True)
    missing = await service.get("/v1/ops/banks/PB-999999", headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "bank_not_found")
    assert (await service.get("/v1/ops/banks/PB-000002", headers=auth(signer, kind="user"))).status_code == 403

    everything = (await service.get("/v1/ops/banks", params={"limit": 1000}, headers=headers)).json()
    assert everything["next_after"] is None
    ids, after = [], None
    while True:
        page = (
            await service.get(
                "/v1/ops/banks", params={"limit": 3, **({"after": after} if after else {})}, headers=headers
            )
        ).json()
        ids += [b["id"] for b in page["items"]]
        after = page["next_after"]
        if after is None:
            break
        assert len(page["items"]) == 3
    assert ids == [b["id"] for b in everything["items"]] == sorted(ids)

    prefix = (await service.get("/v1/ops/banks", params={"q": "PB-00000"}, headers=headers)).json()["items"]
    assert [b["id"] for b in prefix] == [i for i in ids if i.startswith("PB-00000")]
    assert (await service.get("/v1/ops/banks", params={"q": "PB-0%"}, headers=headers)).json()["items"] == []
    by_qr = next(b for b in everything["items"] if b["qr_code"])
    found = (await service.get("/v1/ops/banks", params={"q": by_qr["qr_code"]}, headers=headers)).json()["items"]
    assert by_qr["id"] in [b["id"] for b in found]


async def _stored_rssi(database_url: str, bank_id: str, rssi: int) -> bool:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT rssi_dbm FROM banks WHERE id = :id"), {"id": bank_id})).scalar()
        return bool(stored == rssi)
    finally:
        await engine.dispose()


async def test_bank_presence_transitions_reach_kafka_once_each(service, bank_device, tap, database_url):
    bank = await bank_device("PB-000002")
    await bank.send("status", {"type": "status", "online": True})
    up = await tap.wait_for("device.presence.changed", device_id="PB-000002", online=True)
    assert (up.device_kind, up.reason, up.last_seen_at is not None) == ("bank", "connect", True)
    env = next(e for e in tap.events if e.data is up)
    assert (env.key, env.topic) == ("PB-000002", "device.status.v1")
    # Heartbeats and reports of an online bank change nothing; the last will takes it offline.
    await bank.send("heartbeat", {"type": "heartbeat", "msg_id": bank.next_id(), "ts": now_ms(), "rssi_dbm": -88})
    await bank.send("bank_report", bank_report(bank, now_ms(), battery_pct=55))
    await tap.wait_for("device.telemetry.reported", device_id="PB-000002", battery_pct=55)
    # The feed reaches Kafka before its batch commits, and the last will comes on another intake: wait for the
    # heartbeat's signal to be stored (a device's last will comes long after its heartbeat).
    await eventually(lambda: _stored_rssi(database_url, "PB-000002", -88), what="the heartbeat's signal stored")
    await bank.send("status", {"type": "status", "online": False})
    down = await tap.wait_for("device.presence.changed", device_id="PB-000002", online=False)
    assert (down.reason, down.rssi_dbm) == ("last_will", -88)
    # The next message brings it back; silence takes it offline again.
    await bank.send("heartbeat", {"type": "heartbeat", "msg_id": bank.next_id(), "ts": now_ms(), "rssi_dbm": -70})
    back = await tap.wait_for("device.presence.changed", device_id="PB-000002", online=True, reason="message")
    assert back.rssi_dbm == -70
    engine = create_async_engine(database_url)
    try:

        async def publish(session, data, key):
            return await service._transport.app.state.runtime.publish(session, data, key=key)

        assert await mark_banks_offline(make_sessionmaker(engine), publish, offline_after_s=0) == 1
    finally:
        await engine.dispose()
    silent = await tap.wait_for("device.presence.changed", device_id="PB-000002", reason="heartbeat_silence")
    assert (silent.online, silent.last_seen_at is not None) == (False, True)
    await asyncio.sleep(0.3)
    changes = [(e.online, e.reason) for e in tap.matching("device.presence.changed", device_id="PB-000002")]
    assert changes == [(True, "connect"), (False, "last_will"), (True, "message"), (False, "heartbeat_silence")]
