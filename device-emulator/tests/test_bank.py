"""A bank with its own module against a real mosquitto: reports, heartbeats, ring, movement,
faults (lost, duplicated and delayed messages, skewed clock, heat, low battery), last will; and the
cabinet's night light."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from contracts.mqtt import BankAlarm, Light, Ring, Status, UpChannel, cmd_topic
from device_emulator import BankFaults, BankModule, Fleet


def cabinet_password(device_id: str) -> str:
    return f"pw-{device_id}"  # as conftest's broker has it for every id of the pool


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def make_bank(broker, new_cabinet_id):
    made: list[BankModule] = []

    def build(**options):
        bank_id = new_cabinet_id()
        options.setdefault("backoff_initial_s", 0.05)
        bank = BankModule(bank_id, cabinet_password(bank_id), broker.host, broker.port, **options)
        made.append(bank)
        return bank

    yield build
    await asyncio.gather(*(b.stop() for b in made if b.running))


async def ring(svc, bank_id, *, expires_in_ms=30_000, duration_s=5):
    cmd = Ring(cmd_id=f"ring-{now_ms()}", expires_at=now_ms() + expires_in_ms, duration_s=duration_s)
    await svc.client.publish(cmd_topic(bank_id), cmd.model_dump_json(), qos=1)
    return cmd


async def test_bank_announces_reports_heartbeats_and_rings(make_bank, svc_session):
    bank = make_bank(lat=22.54, lon=114.05, battery_pct=64, charge_cycles=12, heartbeat_s=0.2, report_s=0.5)
    async with svc_session(bank.bank_id) as svc:
        await bank.start()
        assert await bank.wait_online(5)
        assert (await svc.wait_for(bank.bank_id, UpChannel.STATUS))[0].msg == Status(online=True)
        first = (await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT))[0].msg
        assert (first.position.lat, first.position.lon, first.battery_pct, first.charge_cycles) == (
            22.54,
            114.05,
            64,
            12,
        )
        assert first.moving is False
        assert abs(first.ts - now_ms()) < 2000
        await svc.wait_for(bank.bank_id, UpChannel.HEARTBEAT, count=2, timeout=3)
        await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT, count=2, timeout=3)  # periodic
        cmd = await ring(svc, bank.bank_id)
        for _ in range(100):
            if bank.rings:
                break
            await asyncio.sleep(0.02)
        assert bank.rings == [cmd]
        assert bank.ringing
        await ring(svc, bank.bank_id, expires_in_ms=-1000)  # expired: not acted on
        await asyncio.sleep(0.3)
        assert len(bank.rings) == 1


async def test_movement_heat_low_battery_and_power_statistics(make_bank, svc_session):
    bank = make_bank(lat=22.54, lon=114.05, battery_pct=90, heartbeat_s=60, report_s=60)
    async with svc_session(bank.bank_id) as svc:
        await bank.start()
        assert await bank.wait_online(5)
        await bank.move_to(22.541, 114.052)
        moved = (await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT, lambda m: m.moving))[0].msg
        assert (moved.position.lat, moved.position.lon) == (22.541, 114.052)
        assert moved.alarms == [BankAlarm.MOVED]
        bank.use(80)  # a phone drew 80 %
        bank.set_faults(temperature_c=65.0)
        await bank.report()
        hot = (await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT, lambda m: m.battery_pct == 10))[0].msg
        assert set(hot.alarms) == {BankAlarm.HIGH_TEMPERATURE, BankAlarm.LOW_BATTERY}
        assert hot.discharge_mah_total == 4000
        bank.charge(90)
        bank.charge(100)  # full at 100 %: 190 % charged in -> one cycle... capped at the capacity left
        await bank.report()
        full = (await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT, lambda m: m.battery_pct == 100))[0].msg
        assert (full.charge_mah_total, full.charge_cycles, full.charging) == (4500, 0, False)
        bank.use(100)
        bank.charge(100)
        assert (bank.status.charge_mah_total, bank.status.charge_cycles) == (9500, 1)


async def test_lost_duplicated_delayed_and_skewed_messages(make_bank, svc_session):
    bank = make_bank(lat=1.0, lon=2.0, heartbeat_s=60, report_s=60, clock_skew_ms=-3_600_000)
    async with svc_session(bank.bank_id) as svc:
        await bank.start()
        assert await bank.wait_online(5)
        first = (await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT))[0].msg
        assert abs(first.ts - (now_ms() - 3_600_000)) < 2000  # the skewed clock
        bank.set_faults(duplicate=3)
        dup_id = await bank.report()
        got = await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT, lambda m: m.msg_id == dup_id, count=3)
        assert len({r.raw for r in got}) == 1  # the same message three times (a QoS 1 redelivery)
        bank.set_faults(duplicate=1, drop_messages=True)
        lost_id = await bank.report()
        bank.set_faults(drop_messages=False, delay_s=0.5)
        late_id = await bank.report()
        bank.set_faults(delay_s=0)
        on_time_id = await bank.report()
        await svc.wait_for(bank.bank_id, UpChannel.BANK_REPORT, lambda m: m.msg_id == late_id, timeout=3)
        order = [r.msg.msg_id for r in svc.of(bank.bank_id, UpChannel.BANK_REPORT)]
        assert lost_id not in order
        assert order.index(on_time_id) < order.index(late_id)  # the older one arrived last
        assert bank.stats["dropped"] == 1


async def test_going_offline_publishes_the_last_will(make_bank, svc_session):
    bank = make_bank(heartbeat_s=60, report_s=60, keepalive_s=5)
    async with svc_session(bank.bank_id) as svc:
        await bank.start()
        assert await bank.wait_online(5)
        await bank.go_offline()
        offline = await svc.wait_for(bank.bank_id, UpChannel.STATUS, lambda m: not m.online, timeout=5)
        assert offline[0].msg == Status(online=False)
        assert await bank.go_online(timeout_s=5)
        await svc.wait_for(bank.bank_id, UpChannel.STATUS, lambda m: m.online, count=2, timeout=5)


async def test_cabinet_night_light_and_foreign_commands(make_cabinet, svc_session):
    cab = make_cabinet()
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        light = Light(cmd_id="l-1", expires_at=now_ms() + 5000, on=True, duration_s=30)
        await svc.client.publish(cmd_topic(cab.cabinet_id), light.model_dump_json(), qos=1)
        await svc.client.publish(
            cmd_topic(cab.cabinet_id), Ring(cmd_id="r-1", expires_at=now_ms() + 5000).model_dump_json(), qos=1
        )
        for _ in range(100):
            if cab.night_light:
                break
            await asyncio.sleep(0.02)
        assert cab.night_light
        assert cab.describe()["night_light"] is True
        # The cabinet still works after a command that is not for it.
        await svc.eject(cab.cabinet_id, "after-ring", bank_id=f"PB-{cab.cabinet_id}-1")
        result = (await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT))[0].msg
        assert result.result == "ok"
        off = Light(cmd_id="l-2", expires_at=now_ms() + 5000, on=False)
        await svc.client.publish(cmd_topic(cab.cabinet_id), off.model_dump_json(), qos=1)
        for _ in range(100):
            if not cab.night_light:
                break
            await asyncio.sleep(0.02)
        assert not cab.night_light


async def test_fleet_file_with_bank_modules(tmp_path, broker, new_cabinet_id, write_fleet):
    cab_id, bank_id = new_cabinet_id(), new_cabinet_id()
    path = write_fleet(tmp_path / "fleet.json", [cab_id])
    data = json.loads(path.read_text())
    data["banks"] = [{"bank_id": bank_id, "password": cabinet_password(bank_id), "cabinet_id": cab_id}]
    path.write_text(json.dumps(data))
    fleet = Fleet.from_file(path, bank_options={"heartbeat_s": 60, "faults": BankFaults()})
    bank = fleet.banks[bank_id]
    assert (bank.status.lat, bank.status.lon) == (data["cabinets"][0]["lat"], data["cabinets"][0]["lon"])
    try:
        assert await fleet.start_all(timeout_s=10)
        assert bank.online
    finally:
        await fleet.stop_all()
    assert not bank.online


def test_reports_are_reproducible_from_a_seed():
    def reports(seed: int) -> list[dict]:
        bank = BankModule("PB-1", "x", "127.0.0.1", 1, lat=1.0, lon=2.0, rng=random.Random(seed))
        return [bank._make_report(moving=False).model_dump(exclude={"msg_id", "ts"}) for _ in range(5)]

    assert reports(7) == reports(7)
    assert reports(7) != reports(8)
