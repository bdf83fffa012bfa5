"""The broker-auth sidecar (device_svc.brokerauth): the broker's accounts follow the registry whichever process
changed it, a burst of changes is one rewrite, and a replica's answer waits for every live broker."""

import asyncio

import pytest
from sqlalchemy import text

from kit.db import make_engine
from kit.testing import app_client, eventually

pytestmark = pytest.mark.integration


def admin(signer):
    token = signer.issue("00000000-0000-0000-0000-0000000000ad", kind="admin", roles=["super_admin"])
    return {"Authorization": f"Bearer {token}"}


async def test_the_broker_follows_the_registry_whoever_changed_it(database_url, broker, broker_auth, fleet):
    """Another replica's change (here: a statement on the registry, not through this process) reaches the broker
    through the trigger's notification; many changes in a burst become one rewrite."""
    cabinet = fleet["cabinets"][0]
    assert await broker.accepts(cabinet["cabinet_id"], cabinet["password"])
    before = broker_auth.rewrites
    engine = make_engine(database_url, 2)
    try:
        async with engine.begin() as conn:
            for c in fleet["cabinets"]:  # one statement each, in one burst
                await conn.execute(
                    text("UPDATE device_credentials SET active = false WHERE device_id = :id"), {"id": c["cabinet_id"]}
                )

        async def refused() -> bool:
            return not await broker.accepts(cabinet["cabinet_id"], cabinet["password"])

        await eventually(refused, timeout=10, interval=0.05, what="the broker to refuse a deactivated cabinet")
        assert broker_auth.rewrites - before <= 2
        async with engine.begin() as conn:
            version = (await conn.execute(text("SELECT version FROM broker_auth_version"))).scalar_one()
        assert broker_auth.applied == version
    finally:
        await engine.dispose()


async def test_an_answer_waits_for_every_live_broker(
    settings_factory, group_factory, readiness, broker, fleet, signer, service_password
):
    """No sidecar running: the answer comes after the budget and the broker does not know the device yet; once a
    sidecar runs (this one reloads its broker with a command), it does, and GET /v1/admin/broker-auth shows that
    broker live at the registry's version."""
    from device_svc.brokerauth.sync import BrokerAuthSidecar, BrokerPaths
    from device_svc.main import create_app

    settings = settings_factory(await group_factory("device-svc-brokerauth")).model_copy(
        update={"broker_sync_wait_s": 0.3}
    )
    async with app_client(create_app(settings)) as client:
        await readiness(client)
        cabinet = {"id": "CAB-0300", "name": "Station", "lat": 22.5, "lon": 114.0, "region": "Futian", "slot_count": 4}
        resp = await client.post("/v1/admin/cabinets", json=cabinet, headers=admin(signer))
        assert resp.status_code == 201, resp.text
        credential = resp.json()["credential"]
        assert not await broker.accepts("CAB-0300", credential["password"])

        engine = make_engine(settings.database_url, 2)
        sidecar = BrokerAuthSidecar(
            engine,
            settings.database_url,
            # reloads its broker through a command, as for a broker in a container (MQTT_BROKER_RELOAD_COMMAND)
            BrokerPaths(broker.password_file, None, ("kill", "-HUP", broker.pidfile.read_text().strip())),
            broker_id="late-broker",
            service_user="device-svc",
            service_password=service_password,
        )
        task = asyncio.create_task(sidecar.run())
        try:

            async def accepted() -> bool:
                return await broker.accepts("CAB-0300", credential["password"])

            await eventually(accepted, timeout=10, interval=0.05, what="the broker to accept CAB-0300")
            view = (await client.get("/v1/admin/broker-auth", headers=admin(signer))).json()
            late = next(b for b in view["brokers"] if b["broker_id"] == "late-broker")
            assert late["live"] is True
            assert late["version"] == view["version"] >= credential["broker_version"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.dispose()
