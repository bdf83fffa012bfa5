"""Bad device messages are dropped, logged, counted and reported, and never stop the next one;
the broker itself keeps devices to their own topics."""

import asyncio

import aiomqtt
import pytest
from prometheus_client import REGISTRY

from contracts.mqtt import MAX_PAYLOAD_BYTES, TOPIC_ROOT
from kit.testing import eventually
from kit.x509 import client_context, ensure_broker_files

pytestmark = pytest.mark.integration


def rejected_count(reason):
    return REGISTRY.get_sample_value("pb_device_messages_rejected_total", {"reason": reason}) or 0.0


def received_count(channel):
    return REGISTRY.get_sample_value("pb_device_messages_received_total", {"channel": channel}) or 0.0


async def cabinet_rssi(service, signer, cabinet_id):
    token = signer.issue("00000000-0000-0000-0000-000000000001")
    resp = await service.get(f"/v1/cabinets/{cabinet_id}", headers={"Authorization": f"Bearer {token}"})
    return resp.json()["rssi_dbm"]


async def wait_rssi(service, signer, cabinet_id, value, timeout=5.0):
    for _ in range(int(timeout / 0.05)):
        if await cabinet_rssi(service, signer, cabinet_id) == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cabinet_id} rssi never became {value}")


def heartbeat(cab, clock, rssi):
    return {"type": "heartbeat", "msg_id": cab.next_id(), "ts": clock(), "rssi_dbm": rssi}


async def test_bad_messages_are_rejected_and_the_next_one_still_processed(
    service, online, service_account, cabinets, service_password, tap, clock, signer
):
    cab = await online("CAB-0001")
    # What the broker delivers from CAB-0001, seen by a second service-account client.
    watcher = await cabinets("device-svc", service_password, subscribe=False)
    await watcher.client.subscribe(f"{TOPIC_ROOT}/CAB-0001/up/#", qos=1)
    before = {
        r: rejected_count(r) for r in ("invalid_payload", "oversized", "unknown_device", "duplicate", "bad_topic")
    }

    await cab.send("heartbeat", b"{not json")
    await cab.send("heartbeat", b"x" * (MAX_PAYLOAD_BYTES + 1))
    await cab.send("inventory", heartbeat(cab, clock, -60))  # type does not match the channel
    await service_account.send(None, heartbeat(cab, clock, -61), topic="pb/v1/devices/CAB-9999/up/heartbeat")
    # No such channel: the broker refuses the device's publish (ACL), so it never reaches the platform.
    await cab.send(None, heartbeat(cab, clock, -62), topic="pb/v1/devices/CAB-0001/up/nonsense")
    same = heartbeat(cab, clock, -63)
    await cab.send("heartbeat", same)
    await cab.send("heartbeat", same)  # replay
    await cab.send("heartbeat", heartbeat(cab, clock, -64))  # valid, after all of the above

    # One publisher, one subscriber: the broker keeps their order, so everything CAB-0001 published
    # before the last heartbeat has been delivered by the time it is.
    delivered = []
    async with asyncio.timeout(10):
        async for message in watcher.client.messages:
            if message.retain:
                continue  # an earlier test's retained status
            delivered.append(str(message.topic))
            payload = message.payload
            if isinstance(payload, bytes) and b'"rssi_dbm": -64' in payload:
                break
    assert not [t for t in delivered if t.endswith("/nonsense")]
    assert len(delivered) == 6  # all the others

    await wait_rssi(service, signer, "CAB-0001", -64)
    await tap.wait_for("device.message.rejected", device_id="CAB-9999", reason="unknown_device")
    await tap.wait_for("device.message.rejected", device_id="CAB-0001", reason="oversized")

    # The intakes (critical, state, telemetry) work side by side: the inventory's refusal may come last.
    async def both_invalid_payloads() -> bool:
        return len(tap.matching("device.message.rejected", device_id="CAB-0001", reason="invalid_payload")) >= 2

    await eventually(both_invalid_payloads, what="both invalid payloads refused")
    assert rejected_count("invalid_payload") - before["invalid_payload"] == 2
    assert rejected_count("oversized") - before["oversized"] == 1
    assert rejected_count("unknown_device") - before["unknown_device"] == 1
    assert rejected_count("bad_topic") - before["bad_topic"] == 0
    assert rejected_count("duplicate") - before["duplicate"] == 1
    assert not tap.matching("device.message.rejected", reason="duplicate")
    await tap.wait_for("device.telemetry.reported", device_id="CAB-0001", rssi_dbm=-64)


async def test_broker_refuses_a_wrong_password(service, fleet, broker):
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            broker.host, broker.port, tls_context=broker.tls, username="CAB-0001", password="wrong-password"
        ):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port, tls_context=broker.tls):
            pass


async def test_a_device_cannot_act_for_another(service, fleet, online, cabinets, clock, signer, eject):
    cab2 = await online("CAB-0002")
    password1 = next(c["password"] for c in fleet["cabinets"] if c["cabinet_id"] == "CAB-0001")
    cab1 = await cabinets("CAB-0001", password1)
    received = received_count("heartbeat")

    # CAB-0001 writes to CAB-0002's topic: the broker drops it (the ACL), device-svc never sees it.
    await cab1.send(None, heartbeat(cab1, clock, -11), topic="pb/v1/devices/CAB-0002/up/heartbeat")
    await cab2.send("heartbeat", heartbeat(cab2, clock, -22))
    await wait_rssi(service, signer, "CAB-0002", -22)
    await asyncio.sleep(0.3)
    assert await cabinet_rssi(service, signer, "CAB-0002") == -22
    assert received_count("heartbeat") - received == 1

    # Nor may it read another cabinet's commands: the subscription delivers nothing.
    await cab1.client.subscribe("pb/v1/devices/CAB-0002/#", qos=1)
    await eject("CAB-0002")
    assert (await cab2.receive()).type == "eject"
    with pytest.raises(TimeoutError):
        await cab1.receive(timeout=0.5)


async def test_wrong_types_are_refused_not_coerced(service, online, tap, clock, signer):
    """The protocol is strict (issue 14): `"online": "no"` is not a boolean, `"v": true` is not version
    1, a number in a string is not a number. Each is refused as invalid_payload, logged and counted, and
    changes nothing; the next well-formed message is processed."""
    cab = await online("CAB-0001")
    before = rejected_count("invalid_payload")
    wrong = [
        ("status", {"type": "status", "online": "no"}),
        ("heartbeat", {**heartbeat(cab, clock, -41), "v": True}),
        ("heartbeat", {**heartbeat(cab, clock, -42), "rssi_dbm": "-42"}),
        ("heartbeat", {**heartbeat(cab, clock, -43), "ts": float(clock())}),
        ("inventory", {"type": "inventory", "msg_id": cab.next_id(), "ts": clock(), "slots": [{"slot": "1"}]}),
    ]
    for channel, payload in wrong:
        await cab.send(channel, payload)
    await cab.send("heartbeat", heartbeat(cab, clock, -44))

    async def all_refused() -> bool:
        found = tap.matching("device.message.rejected", device_id="CAB-0001", reason="invalid_payload")
        return len(found) >= len(wrong)

    await eventually(all_refused, what="every wrongly typed message refused")
    assert rejected_count("invalid_payload") - before == len(wrong)
    await wait_rssi(service, signer, "CAB-0001", -44)
    token = signer.issue("00000000-0000-0000-0000-000000000001")
    cabinet = (await service.get("/v1/cabinets/CAB-0001", headers={"Authorization": f"Bearer {token}"})).json()
    assert cabinet["online"] is True  # "online": "no" did not take it offline


async def test_devices_reach_the_broker_only_over_tls_and_verify_it(fleet, broker, tmp_path):
    """The broker's only listener is TLS; a client that does not trust the platform's CA (a broker it cannot
    verify, as a device would see a man in the middle) refuses the handshake, and so does a clear-text one."""
    password = next(c["password"] for c in fleet["cabinets"] if c["cabinet_id"] == "CAB-0001")
    async with aiomqtt.Client(
        broker.host, broker.port, tls_context=broker.tls, username="CAB-0001", password=password
    ) as client:
        await client.publish("pb/v1/devices/CAB-0001/up/status", b"online", qos=1)
    stranger = ensure_broker_files(tmp_path / "other-ca", ["127.0.0.1"])
    with pytest.raises(aiomqtt.MqttError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            tls_context=client_context(stranger.ca_cert),
            username="CAB-0001",
            password=password,
        ):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port, username="CAB-0001", password=password, timeout=3):
            pass
