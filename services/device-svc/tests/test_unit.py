"""Unit tests: nothing running."""

import asyncio
import base64
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from contracts.events import EjectFailureReason
from contracts.mqtt import EjectResultCode, UpChannel, parse_up_topic
from device_svc.clock import checked_device_time, datetime_to_ms
from device_svc.commands.rules import BankView, bank_refusal, failure_reason, pick_best_bank
from device_svc.mqtt.dispatch import DeviceLanes
from device_svc.mqtt.handlers import CHANNELS
from device_svc.mqtt.intake import INTAKE_CHANNELS, Intake, intake_of, presence_only, subscriptions
from device_svc.provisioning.credentials import generate_password, hash_password, verify_password
from device_svc.provisioning.mosquitto import mosquitto_hash, render_password_file, verify_mosquitto_hash
from device_svc.provisioning.seed import plan_cabinet
from kit.testing import eventually

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

# Written by `mosquitto_passwd -b -c pw alice secret` (Mosquitto 2.0.11).
MOSQUITTO_PASSWD_LINE = "alice:$7$101$h2jjEn50v/iNFINK$KQWOjjWudxiVLs6WdYODCMApRKQ0WJxCcDqjrJg/red3DmJrOzXC9V+ydEs3c9tSPE7z+v/hKlPvr3goJkv4Pw=="


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("pb/v1/devices/CAB-0001/up/hello", ("CAB-0001", "hello")),
        ("pb/v1/devices/CAB-0001/up/return", ("CAB-0001", "return")),
        ("pb/v1/devices/CAB-0001/cmd", None),
        ("pb/v1/devices/CAB-0001/up/hello/extra", None),
        ("pb/v2/devices/CAB-0001/up/hello", None),
        ("", None),
    ],
)
def test_topic_parsing(topic, expected):
    assert parse_up_topic(topic) == expected


def test_every_channel_is_known_and_others_are_not():
    assert {
        "hello",
        "heartbeat",
        "inventory",
        "eject_result",
        "return",
        "slot_abnormal",
        "status",
        "bank_report",
        "firmware",
        "plays",
    } == CHANNELS
    assert "nonsense" not in CHANNELS


def test_clock_uses_device_time_when_plausible():
    ts = datetime_to_ms(NOW - timedelta(seconds=5))
    at, adjusted = checked_device_time(ts, NOW, not_before=NOW - timedelta(minutes=10), max_skew_s=60)
    assert (at, adjusted) == (NOW - timedelta(seconds=5), False)
    at, adjusted = checked_device_time(datetime_to_ms(NOW + timedelta(seconds=59)), NOW, not_before=None, max_skew_s=60)
    assert not adjusted


@pytest.mark.parametrize(
    "device_time",
    [NOW + timedelta(days=1), NOW + timedelta(seconds=61), NOW - timedelta(hours=1)],
)
def test_clock_falls_back_to_server_time(device_time):
    at, adjusted = checked_device_time(
        datetime_to_ms(device_time), NOW, not_before=NOW - timedelta(minutes=10), max_skew_s=60
    )
    assert (at, adjusted) == (NOW, True)


def test_clock_survives_absurd_device_times():
    assert checked_device_time(10**17, NOW, not_before=None, max_skew_s=60) == (NOW, True)


def bank(**kw):
    base = {"id": "PB-1", "state": "in_cabinet", "battery_pct": 80, "cabinet_id": "CAB-1", "slot_no": 1}
    return BankView(**(base | kw))


@pytest.mark.parametrize(
    ("view", "online", "reason"),
    [
        (bank(), True, None),
        (bank(battery_pct=19), True, EjectFailureReason.BANK_BATTERY_LOW),
        (bank(battery_pct=None), True, EjectFailureReason.BANK_BATTERY_LOW),
        (bank(battery_pct=20), True, None),
        (bank(state="faulty"), True, EjectFailureReason.BANK_FAULTY),
        (bank(slot_fault="cable_fault"), True, EjectFailureReason.BANK_FAULTY),
        (bank(reported_fault=True), True, EjectFailureReason.BANK_FAULTY),
        (bank(reported_fault=True, battery_pct=99), False, EjectFailureReason.BANK_FAULTY),
        (bank(state="rented", cabinet_id=None, slot_no=None), None, EjectFailureReason.BANK_NOT_AVAILABLE),
        (bank(state="maintenance"), True, EjectFailureReason.BANK_NOT_AVAILABLE),
        (bank(pending_command=True), True, EjectFailureReason.BANK_NOT_AVAILABLE),
        (bank(), False, EjectFailureReason.CABINET_OFFLINE),
    ],
)
def test_bank_refusal_rules(view, online, reason):
    refusal = bank_refusal(view, cabinet_online=online, min_battery_pct=20)
    assert (refusal[0] if refusal else None) == reason


def test_pick_best_bank_takes_most_charge_among_rentable():
    banks = [
        bank(id="A", battery_pct=70, slot_no=1),
        bank(id="B", battery_pct=99, slot_no=2, state="faulty"),
        bank(id="B2", battery_pct=98, slot_no=7, reported_fault=True),
        bank(id="C", battery_pct=95, slot_no=3, pending_command=True),
        bank(id="D", battery_pct=90, slot_no=4),
        bank(id="E", battery_pct=90, slot_no=5),
        bank(id="F", battery_pct=10, slot_no=6),
    ]
    best = pick_best_bank(banks, 20)
    assert best is not None
    assert best.id == "D"
    assert pick_best_bank([bank(battery_pct=5)], 20) is None


def test_result_codes_map_to_failure_reasons():
    assert failure_reason(EjectResultCode.FAILED) == EjectFailureReason.EJECT_FAILED
    assert failure_reason(EjectResultCode.MOTOR_FAULT) == EjectFailureReason.MOTOR_FAULT
    assert failure_reason(EjectResultCode.BANK_NOT_PRESENT) == EjectFailureReason.BANK_NOT_PRESENT
    assert failure_reason(EjectResultCode.EXPIRED) == EjectFailureReason.COMMAND_EXPIRED
    assert failure_reason(EjectResultCode.TIMEOUT) == EjectFailureReason.DEVICE_NO_ANSWER


def test_mosquitto_hash_matches_mosquitto_passwd_output():
    _user, entry = MOSQUITTO_PASSWD_LINE.split(":", 1)
    assert verify_mosquitto_hash("secret", entry)
    assert not verify_mosquitto_hash("Secret", entry)
    salt = base64.b64decode(entry.split("$")[3])
    assert mosquitto_hash("secret", salt=salt) == entry
    fresh = mosquitto_hash("pw")
    _, algo, iterations, salt_b64, hash_b64 = fresh.split("$")
    assert (algo, iterations) == ("7", "101")
    assert len(base64.b64decode(salt_b64)) == 12
    assert len(base64.b64decode(hash_b64)) == 64
    assert render_password_file({"b": "$7$x", "a": "$7$y"}) == "a:$7$y\nb:$7$x\n"
    with pytest.raises(ValueError):
        render_password_file({"a:b": "$7$x"})


def test_our_hash_verifies_against_a_fresh_mosquitto_passwd_file(tmp_path):
    pw = tmp_path / "pw"
    subprocess.run(
        [shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", "-c", str(pw), "dev1", "p@ss w0rd"],
        check=True,
    )
    entry = pw.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash("p@ss w0rd", entry)


def test_seed_plan_is_deterministic_and_leaves_two_slots_free():
    import random

    lat, lon, banks = plan_cabinet(1, 8, random.Random(42))
    assert (lat, lon, banks) == plan_cabinet(1, 8, random.Random(42))
    assert sorted(banks) == [1, 2, 3, 4, 5, 6]
    assert banks[2] == ("PB-000002", 10)
    assert banks[1][0] == "PB-000001"
    _, _, second = plan_cabinet(2, 8, random.Random(1))
    assert second[1][0] == "PB-000007"
    _lat2, lon2, _ = plan_cabinet(2, 8, random.Random(42))
    assert 0.002 < abs(lon2 - lon) < 0.005  # a few hundred metres apart


class _Acks:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def of(self, name: str) -> Callable[[], None]:
        return lambda: self.sent.append(name)


async def test_lane_acks_after_processing_and_after_retries():
    acks, attempts = _Acks(), {"poison": 0, "flaky": 0}

    async def process(topic: str, payload: bytes, at: datetime, retained: bool = False) -> None:
        name = payload.decode()
        if name == "poison":
            attempts[name] += 1
            raise RuntimeError("always")
        if name == "flaky":
            attempts[name] += 1
            if attempts[name] < 3:
                raise RuntimeError("transient")
        assert name not in acks.sent  # not acknowledged before it is handled

    lanes = DeviceLanes(process, attempts=3, retry_delay_s=0.001)
    failed = REGISTRY.get_sample_value("pb_device_messages_failed_total") or 0.0
    topic = "pb/v1/devices/CAB-0001/up/heartbeat"
    for name in ("ok", "flaky", "poison", "last"):
        lanes.submit(topic, name.encode(), NOW, acks.of(name))
    await eventually(lambda: _done(acks.sent, 4), what="every message handled")
    assert acks.sent == ["ok", "flaky", "poison", "last"]  # in order; the poison one given up and acked
    assert attempts == {"poison": 3, "flaky": 3}
    assert REGISTRY.get_sample_value("pb_device_messages_failed_total") == failed + 1
    await lanes.close()


async def test_lane_waits_out_an_outage_without_giving_up_or_acking():
    acks, calls = _Acks(), {"n": 0}

    async def process(topic: str, payload: bytes, at: datetime, retained: bool = False) -> None:
        calls["n"] += 1
        if calls["n"] <= 6:  # twice the attempts a poison message gets: the database is down
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database down"))
        assert acks.sent == []

    lanes = DeviceLanes(process, attempts=3, retry_delay_s=0.001)
    lanes.submit("pb/v1/devices/CAB-0001/up/heartbeat", b"m", NOW, acks.of("m"))
    await eventually(lambda: _done(acks.sent, 1), what="the message handled after the outage")
    assert calls["n"] == 7 and acks.sent == ["m"]
    await lanes.close()


async def test_lane_acks_a_dropped_message_at_once_and_not_a_cancelled_one():
    acks, release = _Acks(), asyncio.Event()

    async def process(topic: str, payload: bytes, at: datetime, retained: bool = False) -> None:
        await release.wait()

    lanes = DeviceLanes(process, max_pending_per_device=1)
    topic = "pb/v1/devices/CAB-0001/up/heartbeat"
    lanes.submit(topic, b"a", NOW, acks.of("a"))  # taken by the lane's worker at its first turn
    await asyncio.sleep(0)
    lanes.submit(topic, b"b", NOW, acks.of("b"))  # waits in the queue
    lanes.submit(topic, b"c", NOW, acks.of("c"))  # queue full: dropped, acknowledged
    assert acks.sent == ["c"]
    await lanes.close()  # shutdown mid-handling: the broker will send "a" and "b" again
    assert acks.sent == ["c"]


async def test_a_status_with_a_later_message_of_its_device_waiting_is_acked_unhandled():
    """After a broker restart a cabinet's lane holds its last will, its online status and its hello:
    only the hello is handled; every message is acknowledged. A status with nothing behind it is
    handled, and other devices' messages never make one moot."""
    acks, handled, release = _Acks(), [], asyncio.Event()

    async def process(topic: str, payload: bytes, at: datetime, retained: bool = False) -> None:
        await release.wait()
        handled.append(payload.decode())

    lanes = DeviceLanes(process, superseded=presence_only)
    superseded = REGISTRY.get_sample_value("pb_device_messages_superseded_total") or 0.0
    cab1, cab2 = "pb/v1/devices/CAB-0001/up", "pb/v1/devices/CAB-0002/up"
    lanes.submit(f"{cab1}/hello", b"busy", NOW, acks.of("busy"))  # the lane's worker holds this one
    await asyncio.sleep(0)
    for topic, name in [
        (f"{cab1}/status", "will"),
        (f"{cab1}/status", "online"),
        (f"{cab2}/status", "other"),
        (f"{cab1}/hello", "hello"),
        (f"{cab1}/status", "last"),
    ]:
        lanes.submit(topic, name.encode(), NOW, acks.of(name))
    release.set()
    await eventually(lambda: _done(acks.sent, 6), what="every message acknowledged")
    assert sorted(handled) == ["busy", "hello", "last", "other"]
    assert sorted(acks.sent) == ["busy", "hello", "last", "online", "other", "will"]
    assert REGISTRY.get_sample_value("pb_device_messages_superseded_total") == superseded + 2
    await lanes.close()


async def _done(sent: list[str], n: int) -> bool:
    return len(sent) >= n


def test_every_channel_has_one_intake_and_the_broker_allows_exactly_the_channels():
    assigned = [channel for channels in INTAKE_CHANNELS.values() for channel in channels]
    assert sorted(assigned) == sorted(UpChannel)  # each once
    assert intake_of("eject_result") is Intake.CRITICAL
    assert intake_of("return") is Intake.CRITICAL
    assert intake_of("heartbeat") is Intake.TELEMETRY
    assert intake_of("nonsense") is Intake.STATE
    assert subscriptions(Intake.CRITICAL, "g")[0] == "$share/g/pb/v1/devices/+/up/eject_result"
    root = Path(__file__).resolve().parents[3]
    for acl in (root / "deploy/local/mosquitto/acl", root / "deploy/k8s/10-config.yaml"):
        allowed = {
            line.split("/up/")[1]
            for line in acl.read_text().splitlines()
            if line.strip().startswith("pattern write pb/v1/devices/%u/up/")
        }
        assert allowed == {c.value for c in UpChannel}, acl


def test_device_password_hash_is_fast_salted_and_keeps_argon2_hashes_verifying():
    password = generate_password()
    assert len(base64.urlsafe_b64decode(password + "==")) == 24  # 192 random bits
    stored = hash_password(password)
    assert stored.startswith("$hmac-sha256$")
    assert verify_password(password, stored)
    assert not verify_password(password + "x", stored)
    assert hash_password(password) != stored  # salted: the same password never hashes the same
    assert not verify_password(password, "$hmac-sha256$not base64$x")
    # A hash written before the fast scheme (Argon2id) still verifies.
    legacy = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)
    assert verify_password(password, legacy)
    assert not verify_password(password + "x", legacy)
    assert not verify_password(password, "garbage")


def test_a_client_id_names_its_host_for_replicas_sharing_one_environment():
    import socket

    from device_svc.settings import Settings

    assert Settings(mqtt_client_id="device-svc-{host}").mqtt_client_id == f"device-svc-{socket.gethostname()}"
    assert Settings().mqtt_client_id == "device-svc"
