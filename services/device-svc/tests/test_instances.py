"""Several device-svc instances share the device load through an MQTT shared subscription; the
state they write stays ordered by device time whichever instance handles which message."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from device_svc.main import create_app
from device_svc.mqtt.intake import Intake
from kit.testing import app_client, eventually

pytestmark = pytest.mark.integration


async def test_two_instances_share_the_load_and_keep_state_ordered(
    settings_factory, group_factory, readiness, fleet, bank_device, running_service, signer, tap
):
    group = f"pair-{uuid.uuid4().hex[:6]}"
    counts = {"a": 0, "b": 0}
    apps = []
    for name in ("a", "b"):
        # Each its own Kafka consumer group (no Kafka rebalancing between them: MQTT is under test).
        settings = settings_factory(await group_factory(f"device-svc-{name}")).model_copy(
            update={"mqtt_shared_group": group, "mqtt_client_id": f"{group}-{name}"}
        )
        apps.append((name, create_app(settings)))
    async with app_client(apps[0][1]) as client_a, app_client(apps[1][1]) as client_b:
        await readiness(client_a)
        await readiness(client_b)
        for name, app in apps:
            gateway = app.state.runtime.extras["gateway"]
            assert all(t.startswith(f"$share/{group}/") for i in Intake for t in gateway.subscriptions(i))
            forward = gateway.on_message

            def counting(topic, payload, at, ack, retained, _name=name, _forward=forward):
                counts[_name] += 1
                _forward(topic, payload, at, ack, retained)

            gateway.on_message = counting
        bank = await bank_device("PB-000001")
        base = int(datetime.now(UTC).timestamp() * 1000)
        # Reports with increasing device time, sent newest-last but handled by two instances at once.
        for n in range(40):
            await bank.send(
                "bank_report",
                {"type": "bank_report", "msg_id": f"r-{n}", "ts": base + n, "battery_pct": 100 - n},
            )
        for _ in range(200):
            if counts["a"] + counts["b"] >= 40:
                break
            await asyncio.sleep(0.05)
        assert counts["a"] + counts["b"] == 40  # each message went to exactly one member of the group
        assert counts["a"] > 0
        assert counts["b"] > 0
        token = signer.issue("00000000-0000-0000-0000-000000000009", kind="admin", roles=["operator"])
        battery = None
        for _ in range(100):
            resp = await client_a.get(
                "/v1/ops/banks", params={"has_module": "true"}, headers={"Authorization": f"Bearer {token}"}
            )
            battery = next(b["battery_pct"] for b in resp.json()["items"] if b["id"] == "PB-000001")
            if battery == 61:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # late writers (either instance, either batch) cannot move it back
        resp = await client_b.get(
            "/v1/ops/banks", params={"has_module": "true"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert next(b["battery_pct"] for b in resp.json()["items"] if b["id"] == "PB-000001") == 61
        # Three writers saw the bank's first messages (both instances and the session's own service,
        # which is not in the group): its one transition online was reported once.
        assert [e.reason for e in tap.matching("device.presence.changed", device_id="PB-000001")] == ["message"]


async def test_when_one_instance_stops_the_other_takes_every_message(
    settings_factory, group_factory, readiness, fleet, bank_device
):
    """Members with their own client ids and clean sessions (as the run stack and the manifests start them): once
    one stops, the broker hands every device message to the member still connected. (With persistent sessions
    Mosquitto 2.0.11 kept queueing half of them for the stopped member: measured 10 of 20.)"""
    group = f"pair-{uuid.uuid4().hex[:6]}"
    counts = {"a": 0, "b": 0}
    apps = {}
    for name in ("a", "b"):
        settings = settings_factory(await group_factory(f"device-svc-{name}")).model_copy(
            update={"mqtt_shared_group": group, "mqtt_client_id": f"{group}-{name}", "mqtt_clean_session": True}
        )
        apps[name] = create_app(settings)
    async with app_client(apps["a"]) as client_a:
        await readiness(client_a)
        async with app_client(apps["b"]) as client_b:
            await readiness(client_b)
        # b has stopped (its connections closed).
        for name, app in apps.items():
            gateway = app.state.runtime.extras["gateway"]
            forward = gateway.on_message

            def counting(topic, payload, at, ack, retained, _name=name, _forward=forward):
                counts[_name] += 1
                _forward(topic, payload, at, ack, retained)

            gateway.on_message = counting
        bank = await bank_device("PB-000001")
        base = int(datetime.now(UTC).timestamp() * 1000)
        for n in range(20):
            await bank.send(
                "bank_report", {"type": "bank_report", "msg_id": f"s-{n}", "ts": base + n, "battery_pct": 90}
            )

        async def all_taken() -> bool:
            return counts["a"] >= 20

        await eventually(all_taken, timeout=10, interval=0.05, what="the member still connected to take all 20")
        assert counts == {"a": 20, "b": 0}
