"""A device flooding the platform is throttled alone (issue 15, mqtt/throttle.py): over its budget its
telemetry is dropped and counted as rejected (`throttled`), one `flooding` alarm is raised for the episode,
its return in the middle of the flood is still handled, and a quiet cabinet beside it is heard as usual.
Real Mosquitto, raw MQTT clients, the session's device-svc with a small budget."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from contracts.mqtt import ReturnAck
from device_svc.mqtt.throttle import DeviceThrottle
from kit.testing import eventually

pytestmark = pytest.mark.integration

FLOOD = 300


def counter(name, labels=None):
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def rssi_of(service, signer, cabinet_id):
    token = signer.issue("00000000-0000-0000-0000-000000000001")
    return (await service.get(f"/v1/cabinets/{cabinet_id}", headers={"Authorization": f"Bearer {token}"})).json()[
        "rssi_dbm"
    ]


async def test_a_flooding_cabinet_is_throttled_alone_and_its_return_still_counts(
    service, online, eject, tap, clock, signer, monkeypatch
):
    throttle = service._transport.app.state.runtime.extras["throttle"]
    assert isinstance(throttle, DeviceThrottle)
    noisy, quiet = await online("CAB-0001"), await online("CAB-0002")
    # Rent a bank out of the noisy cabinet first, to bring it back during the flood.
    cmd = await eject("PB-000001")
    command = await noisy.receive()
    await noisy.send(
        "eject_result",
        {"type": "eject_result", "msg_id": noisy.next_id(), "ts": clock(), "cmd_id": command.cmd_id, "result": "ok"},
    )
    await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)

    monkeypatch.setattr(throttle, "rate_per_s", 2.0)
    monkeypatch.setattr(throttle, "burst", 10.0)
    throttled_before = counter("pb_device_messages_rejected_total", {"reason": "throttled"})
    floods_before = counter("pb_device_floods_total")

    def heartbeat(cab, rssi):
        return {"type": "heartbeat", "msg_id": cab.next_id(), "ts": clock(), "rssi_dbm": rssi}

    async def flood(first, count):
        for n in range(first, first + count):
            await noisy.send("heartbeat", heartbeat(noisy, -100 + n % 40))

    await flood(0, FLOOD // 2)
    back = {
        "type": "return",
        "msg_id": noisy.next_id(),
        "ts": clock(),
        "slot": 7,
        "bank_id": "PB-000001",
        "battery_pct": 60,
    }
    await noisy.send("return", back)  # over budget by now: it passes all the same
    await asyncio.gather(flood(FLOOD // 2, FLOOD // 2), quiet.send("heartbeat", heartbeat(quiet, -42)))

    assert await noisy.receive() == ReturnAck(ref_msg_id=back["msg_id"], result="ok")
    await tap.wait_for("device.bank.returned", report_id=f"CAB-0001/{back['msg_id']}")

    async def quiet_heard():
        return await rssi_of(service, signer, "CAB-0002") == -42

    await eventually(quiet_heard)

    async def flood_refused():
        # At most the burst and what refilled at 2/s went through; the rest were dropped on arrival.
        return counter("pb_device_messages_rejected_total", {"reason": "throttled"}) - throttled_before >= FLOOD / 2

    await eventually(flood_refused)
    alarm = await tap.wait_for("device.alarm.raised", device_id="CAB-0001", kind="flooding")
    assert "excess dropped" in alarm.detail
    assert counter("pb_device_floods_total") - floods_before == 1  # one episode, one alarm
    assert len(tap.matching("device.alarm.raised", device_id="CAB-0001", kind="flooding")) == 1
    assert set(throttle.throttled()) == {"CAB-0001"}

    # Back within budget long enough to refill: the episode ends; the next flood would be a new one.
    monkeypatch.setattr(throttle, "rate_per_s", 1000.0)

    async def ended():
        throttle.sweep()
        return throttle.throttled() == {}

    await eventually(ended)
