"""The per-device budget (mqtt/throttle.py) on a fake clock: one device over it loses its telemetry, never
its returns or eject results, raises one flood per episode, and leaves every other device alone."""

from device_svc.mqtt.throttle import DeviceThrottle


def topic(device: str, channel: str) -> str:
    return f"pb/v1/devices/{device}/up/{channel}"


def test_only_the_noisy_device_is_throttled_and_its_returns_pass() -> None:
    now = [0.0]
    floods: list[str] = []
    throttle = DeviceThrottle(2.0, 5, on_flood=lambda device, _: floods.append(device), clock=lambda: now[0])
    admitted = [throttle.admit(topic("CAB-1", "heartbeat")) for _ in range(50)]
    assert admitted.count(True) == 5  # the burst, then nothing (no time passed)
    assert throttle.admit(topic("CAB-1", "return")) and throttle.admit(topic("CAB-1", "eject_result"))
    assert not throttle.admit(topic("CAB-1", "slot_abnormal"))  # alarms count against the budget too
    assert all(throttle.admit(topic("CAB-2", "heartbeat")) for _ in range(5))  # its own budget
    assert floods == ["CAB-1"] and throttle.throttled() == {"CAB-1": 46}
    now[0] += 1.0  # two tokens back, minus the two exempt messages it owed
    assert not throttle.admit(topic("CAB-1", "heartbeat"))
    assert floods == ["CAB-1"]  # still the same episode
    now[0] += 10.0  # refilled: the episode ends at the sweep, and the device is forgotten
    throttle.sweep()
    assert throttle.throttled() == {}
    assert all(throttle.admit(topic("CAB-1", "heartbeat")) for _ in range(5))
    assert not throttle.admit(topic("CAB-1", "heartbeat"))
    assert floods == ["CAB-1", "CAB-1"]  # a new episode, a new alarm


def test_a_makers_critical_topic_is_exempt_and_zero_turns_it_off() -> None:
    throttle = DeviceThrottle(1.0, 1, clock=lambda: 0.0)
    assert all(throttle.admit("/powerbank/VL-1/user/update") for _ in range(20))  # returns and ejects ride it
    assert throttle.admit("/powerbank/VL-1/user/heart") is False  # the heartbeat owes the budget
    off = DeviceThrottle(0.0, 1)
    assert all(off.admit(topic("CAB-1", "heartbeat")) for _ in range(100))
