"""Registry administration: provisioning with per-device credentials the broker accepts at once,
bulk import, rotation and revocation without a broker restart, retirement."""

import aiomqtt
import pytest

from kit.testing import staff_actions

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin_service(settings_factory, group_factory, readiness, broker_auth):
    """An instance with the broker's auth sidecar running beside the broker (as deployed): the service never
    touches the broker's files; its answers wait until the sidecar applied the change."""
    from device_svc.main import create_app
    from kit.testing import app_client

    settings = settings_factory(await group_factory("device-svc-admin"))
    async with app_client(create_app(settings)) as client:
        await readiness(client)
        yield client


def admin(signer, role="super_admin"):
    token = signer.issue("00000000-0000-0000-0000-0000000000ad", kind="admin", roles=[role])
    return {"Authorization": f"Bearer {token}"}


async def test_provision_rotate_revoke_and_retire(admin_service, broker, signer, service_account, tap, database_url):
    client, headers = admin_service, admin(signer)
    cabinet = {"id": "CAB-0100", "name": "Mall", "lat": 22.5, "lon": 114.0, "region": "Nanshan", "slot_count": 4}
    resp = await client.post("/v1/admin/cabinets", json=cabinet, headers=headers)
    assert resp.status_code == 201, resp.text
    # On the platform's audit trail, from the cabinet's own transaction (kit.audit, issue 15).
    [created] = [a for a in await staff_actions(database_url, "cabinet.create")]
    assert (created.actor_id, created.target_type, created.target_id) == (
        "00000000-0000-0000-0000-0000000000ad",
        "cabinet",
        "CAB-0100",
    )
    assert (created.before, created.after["id"], created.after["slot_count"]) == ({}, "CAB-0100", cabinet["slot_count"])
    body = resp.json()
    assert body["state"] == "active"
    assert body["credential"]["broker_version"] > 0
    password = body["credential"]["password"]
    assert await broker.accepts("CAB-0100", password)
    assert (await client.post("/v1/admin/cabinets", json=cabinet, headers=headers)).json()[
        "code"
    ] == "device_already_registered"

    bank = {"id": "PB-100001", "qr_code": "QR-100001", "nfc_uid": "04A1B2C3D4E5F6", "module": True}
    created = (await client.post("/v1/admin/banks", json=bank, headers=headers)).json()
    assert created["state"] == "maintenance"
    assert await broker.accepts("PB-100001", created["credential"]["password"])
    clash = await client.post("/v1/admin/banks", json={"id": "PB-100002", "qr_code": "QR-100001"}, headers=headers)
    assert (clash.status_code, clash.json()["code"]) == (409, "device_already_registered")
    imported = await client.post(
        "/v1/admin/banks/import",
        json={"items": [{"id": "PB-100001"}, {"id": "PB-100003", "ble_mac": "aa:bb:cc:dd:ee:ff"}, {"id": "PB-100004"}]},
        headers=headers,
    )
    assert imported.status_code == 200, imported.text
    assert [c["id"] for c in imported.json()["created"]] == ["PB-100003", "PB-100004"]
    assert imported.json()["skipped"] == ["PB-100001"]
    assert all(c["credential"] is None for c in imported.json()["created"])

    rotated = (await client.post("/v1/admin/devices/CAB-0100/credentials/rotate", headers=headers)).json()
    assert rotated["password"] != password
    assert not await broker.accepts("CAB-0100", password)
    assert await broker.accepts("CAB-0100", rotated["password"])
    revoked = await client.post("/v1/admin/devices/CAB-0100/credentials/revoke", headers=headers)
    assert revoked.json()["active"] is False
    assert revoked.json()["broker_version"] > rotated["broker_version"]
    assert not await broker.accepts("CAB-0100", rotated["password"])

    retired = await client.post("/v1/admin/devices/PB-100001/retire", json={"reason": "water damage"}, headers=headers)
    assert retired.json()["state"] == "retired"
    assert not await broker.accepts("PB-100001", created["credential"]["password"])
    history = (await client.get("/v1/ops/banks/PB-100001/transitions", headers=headers)).json()["items"]
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in history] == [
        (None, "maintenance", "provisioned"),
        ("maintenance", "retired", "retired: water damage"),
    ]
    # Whatever still arrives for a retired device is refused.
    report = {"type": "bank_report", "msg_id": "x-1", "ts": 1764070000000, "battery_pct": 5}
    await service_account.send(None, report, topic="pb/v1/devices/PB-100001/up/bank_report")
    await tap.wait_for("device.message.rejected", device_id="PB-100001", reason="retired_device")


async def test_admin_endpoints_need_an_administrator(admin_service, signer):
    body = {"id": "PB-200001"}
    field = await admin_service.post("/v1/admin/banks", json=body, headers=admin(signer, "field_maintenance"))
    assert field.status_code == 403
    user = signer.issue("00000000-0000-0000-0000-000000000001")
    denied = await admin_service.post("/v1/admin/banks", json=body, headers={"Authorization": f"Bearer {user}"})
    assert denied.status_code == 403
    bad = await admin_service.post("/v1/admin/banks", json={"id": "bad id"}, headers=admin(signer))
    assert bad.status_code == 422
    missing = await admin_service.post("/v1/admin/devices/NOPE-1/credentials/rotate", headers=admin(signer))
    assert (missing.status_code, missing.json()["code"]) == (404, "device_not_found")


async def test_cabinet_operating_data_and_state(admin_service, signer, fleet, database_url):
    headers = admin(signer, "operator")
    resp = await admin_service.patch(
        "/v1/admin/cabinets/CAB-0002",
        json={"address": "Gate B", "opening_hours": "08:00-22:00", "region": "Futian North", "state": "maintenance"},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["address"], body["opening_hours"], body["region"], body["state"]) == (
        "Gate B",
        "08:00-22:00",
        "Futian North",
        "maintenance",
    )
    update = [a for a in await staff_actions(database_url, "cabinet.update") if a.target_id == "CAB-0002"][-1]
    assert (update.before["state"], update.after["state"], update.after["address"]) == (
        "active",
        "maintenance",
        "Gate B",
    )
    assert "name" not in update.after  # only what changed
    here = next(c for c in fleet["cabinets"] if c["cabinet_id"] == "CAB-0002")
    user = {"Authorization": f"Bearer {signer.issue('00000000-0000-0000-0000-000000000001')}"}
    near = await admin_service.get(
        "/v1/cabinets/nearby", params={"lat": here["lat"], "lon": here["lon"], "radius_m": 5000}, headers=user
    )
    assert "CAB-0002" not in [c["id"] for c in near.json()["items"]]  # in maintenance: off the map
    bad = await admin_service.patch("/v1/admin/cabinets/CAB-0002", json={"state": "retired"}, headers=headers)
    assert bad.status_code == 422  # retiring has its own endpoint (it revokes the credential)
    missing = await admin_service.patch("/v1/admin/cabinets/CAB-9999", json={"name": "x"}, headers=headers)
    assert missing.json()["code"] == "device_not_found"


async def test_revoking_or_rotating_disconnects_a_connected_device(admin_service, broker, signer, fleet, tap):
    """Mosquitto (2.0) re-checks connected clients against the reloaded password file: a device
    whose credential is revoked or rotated is dropped at once and cannot come back with the old
    password. The broker does not publish the last will of a client it drops that way, so
    device-svc shows a revoked device offline itself."""
    import asyncio
    import json

    from contracts.mqtt import UpChannel, up_topic
    from kit.testing import eventually

    passwords = {c["cabinet_id"]: c["password"] for c in fleet["cabinets"]}
    will = aiomqtt.Will(up_topic("CAB-0001", UpChannel.STATUS), json.dumps({"type": "status", "online": False}), 1)
    device = aiomqtt.Client(
        broker.host,
        broker.port,
        tls_context=broker.tls,
        username="CAB-0001",
        password=passwords["CAB-0001"],
        identifier="CAB-0001",
        will=will,
    )
    other = aiomqtt.Client(
        broker.host,
        broker.port,
        tls_context=broker.tls,
        username="CAB-0002",
        password=passwords["CAB-0002"],
        identifier="CAB-0002",
    )
    dropped: dict[str, BaseException | None] = {}

    async def hold(client, name):
        try:
            async with client:
                await client.publish(up_topic(name, UpChannel.STATUS), b'{"type":"status","online":true}', qos=1)
                await client.subscribe(f"pb/v1/devices/{name}/cmd", qos=1)
                async for _ in client.messages:
                    pass
        except aiomqtt.MqttError as exc:
            dropped[name] = exc

    tasks = [asyncio.create_task(hold(device, "CAB-0001")), asyncio.create_task(hold(other, "CAB-0002"))]
    try:
        await tap.wait_for("device.presence.changed", device_id="CAB-0001", online=True)
        revoked = await admin_service.post("/v1/admin/devices/CAB-0001/credentials/revoke", headers=admin(signer))
        assert revoked.json()["active"] is False

        async def dropped_cab1():
            return "CAB-0001" in dropped

        await eventually(dropped_cab1, timeout=10, what="the revoked device disconnected")
        assert "CAB-0002" not in dropped  # the others stay connected
        offline = await tap.wait_for("device.presence.changed", device_id="CAB-0001", online=False)
        assert offline.reason == "credential_revoked"
        assert not await broker.accepts("CAB-0001", passwords["CAB-0001"])

        rotated = await admin_service.post("/v1/admin/devices/CAB-0002/credentials/rotate", headers=admin(signer))

        async def dropped_cab2():
            return "CAB-0002" in dropped

        await eventually(dropped_cab2, timeout=10, what="the device with a rotated password disconnected")
        assert not await broker.accepts("CAB-0002", passwords["CAB-0002"])
        assert await broker.accepts("CAB-0002", rotated.json()["password"])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_bulk_import_is_set_based_and_the_broker_accepts_every_new_credential(admin_service, broker, signer):
    client, headers = admin_service, admin(signer)
    cabinets = [
        {"id": f"CAB-2{n:03d}", "name": f"Import {n}", "lat": 22.5, "lon": 114.0, "slot_count": 6} for n in range(300)
    ]
    cabinets[150]["model"] = "CAB-XL"  # what a firmware rollout targets
    resp = await client.post("/v1/admin/cabinets/import", json={"items": cabinets[:2]}, headers=headers)
    assert resp.status_code == 200, resp.text
    again = await client.post("/v1/admin/cabinets/import", json={"items": [*cabinets, cabinets[5]]}, headers=headers)
    body = again.json()
    assert [c["id"] for c in body["created"]] == [c["id"] for c in cabinets[2:]]
    assert body["skipped"] == ["CAB-2000", "CAB-2001", "CAB-2005"]  # registered, and a repeat
    credentials = {c["id"]: c["credential"] for c in body["created"]}
    assert all(c["broker_version"] > 0 and c["password"] for c in credentials.values())
    assert await broker.accepts("CAB-2299", credentials["CAB-2299"]["password"])
    assert not await broker.accepts("CAB-2299", credentials["CAB-2298"]["password"])
    detail = (await client.get("/v1/cabinets/CAB-2150", headers=headers)).json()
    assert detail["slot_count"] == 6
    assert (detail["model"], (await client.get("/v1/cabinets/CAB-2151", headers=headers)).json()["model"]) == (
        "CAB-XL",
        "CAB-STD",
    )

    # An identity shared inside one import (or with a registered bank) refuses the whole import.
    shared = [{"id": "PB-200001", "qr_code": "QR-2"}, {"id": "PB-200002", "qr_code": "QR-2"}]
    refused = await client.post("/v1/admin/banks/import", json={"items": shared}, headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (409, "device_already_registered")
    assert (await client.get("/v1/banks/PB-200001", headers=headers)).status_code == 404
    banks = [{"id": "PB-200001", "qr_code": "QR-2", "module": True}, {"id": "PB-200002", "nfc_uid": "04a1b2c3d4e5f7"}]
    imported = (await client.post("/v1/admin/banks/import", json={"items": banks}, headers=headers)).json()
    assert [(c["id"], c["state"]) for c in imported["created"]] == [
        ("PB-200001", "maintenance"),
        ("PB-200002", "maintenance"),
    ]
    module_password = imported["created"][0]["credential"]["password"]
    assert imported["created"][1]["credential"] is None
    assert await broker.accepts("PB-200001", module_password)
    clash = await client.post(
        "/v1/admin/banks/import", json={"items": [{"id": "PB-200003", "nfc_uid": "04A1B2C3D4E5F7"}]}, headers=headers
    )
    assert (clash.status_code, clash.json()["code"]) == (409, "device_already_registered")
    history = (await client.get("/v1/ops/banks/PB-200002/transitions", headers=headers)).json()["items"]
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in history] == [(None, "maintenance", "provisioned")]
