"""The night light (6.1.4): a user standing at a cabinet lights it to scan its code; the schedule lights
cabinets from local sunset to sunrise, and staff override it per cabinet."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.mqtt import Light
from device_svc.lighting.service import LightRules, run_schedule, wanted_until
from device_svc.lighting.sun import is_dark, next_sunrise
from kit.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration

SHENZHEN = (22.54, 114.05)  # UTC+8, no daylight saving


def user(signer: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue(str(uuid.uuid4()))}"}


def staff(signer: Any) -> dict[str, str]:
    token = signer.issue("00000000-0000-0000-0000-0000000000ad", kind="admin", roles=["field_maintenance"])
    return {"Authorization": f"Bearer {token}"}


def spot(fleet: dict[str, Any], cabinet_id: str) -> dict[str, float]:
    entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == cabinet_id)
    return {"lat": entry["lat"], "lon": entry["lon"]}


async def next_light(cab: Any) -> Light:
    while True:
        msg = await cab.receive()
        if isinstance(msg, Light):
            return msg


def test_dark_from_sunset_to_sunrise_at_the_cabinets_position() -> None:
    rules = LightRules()
    night = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)  # 22:00 in Shenzhen
    dawn = datetime(2026, 12, 5, 22, 30, tzinfo=UTC)  # 06:30; the sun rises about 06:50
    noon = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
    assert is_dark(*SHENZHEN, night) and is_dark(*SHENZHEN, dawn) and not is_dark(*SHENZHEN, noon)
    assert wanted_until(rules, "auto", *SHENZHEN, night) == night + timedelta(hours=1)  # renewed by later runs
    rise = next_sunrise(*SHENZHEN, dawn)
    assert rise is not None and timedelta(0) < rise - dawn < timedelta(hours=1)
    assert wanted_until(rules, "auto", *SHENZHEN, dawn) == rise
    assert wanted_until(rules, "auto", *SHENZHEN, noon) is None
    assert wanted_until(rules, "on", *SHENZHEN, noon) == noon + timedelta(hours=1)
    assert wanted_until(rules, "off", *SHENZHEN, night) is None
    # Polar night: no sunrise for days; lit an hour at a time.
    assert wanted_until(rules, "auto", 89.0, 0.0, noon) == noon + timedelta(hours=1)


async def test_a_user_at_the_cabinet_lights_it(service, fleet, online, signer):
    cab = await online("CAB-0001")
    answer = await service.post("/v1/cabinets/CAB-0001/light", json=spot(fleet, "CAB-0001"), headers=user(signer))
    assert answer.status_code == 202, answer.text
    assert answer.json()["on"] is True and answer.json()["cmd_id"]
    light = await next_light(cab)
    assert light.on and light.duration_s == 60 and light.cmd_id == answer.json()["cmd_id"]


async def test_the_light_is_refused_far_away_offline_and_too_often(service, fleet, online, signer):
    await online("CAB-0001")
    here = spot(fleet, "CAB-0001")
    far = await service.post(
        "/v1/cabinets/CAB-0001/light", json={"lat": here["lat"] + 0.01, "lon": here["lon"]}, headers=user(signer)
    )
    assert far.status_code == 403 and far.json()["code"] == "not_near_cabinet"
    offline = await service.post("/v1/cabinets/CAB-0002/light", json=spot(fleet, "CAB-0002"), headers=user(signer))
    assert offline.status_code == 409 and offline.json()["code"] == "device_offline"
    unknown = await service.post("/v1/cabinets/CAB-9999/light", json=here, headers=user(signer))
    assert unknown.status_code == 404
    bad = await service.post("/v1/cabinets/CAB-0001/light", json={"lat": 91, "lon": 0}, headers=user(signer))
    assert bad.status_code == 422
    someone = user(signer)
    for _ in range(5):
        assert (await service.post("/v1/cabinets/CAB-0001/light", json=here, headers=someone)).status_code == 202
    limited = await service.post("/v1/cabinets/CAB-0001/light", json=here, headers=someone)
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert 500 <= int(limited.headers["Retry-After"]) <= 600
    # another user is not held up by this one
    assert (await service.post("/v1/cabinets/CAB-0001/light", json=here, headers=user(signer))).status_code == 202


async def test_staff_switch_a_cabinets_light_on_and_off(service, fleet, online, signer):
    cab = await online("CAB-0001")
    on = await service.put("/v1/ops/cabinets/CAB-0001/night-light", json={"mode": "on"}, headers=staff(signer))
    assert on.status_code == 200 and on.json()["mode"] == "on"
    light = await next_light(cab)
    assert light.on and 3500 <= light.duration_s <= 3600
    # Already lit by the schedule: a user's request sends nothing more.
    again = await service.post("/v1/cabinets/CAB-0001/light", json=spot(fleet, "CAB-0001"), headers=user(signer))
    assert again.status_code == 202 and again.json()["cmd_id"] is None
    off = await service.put("/v1/ops/cabinets/CAB-0001/night-light", json={"mode": "off"}, headers=staff(signer))
    assert off.status_code == 200
    assert not (await next_light(cab)).on
    refused = await service.put("/v1/ops/cabinets/CAB-0001/night-light", json={"mode": "dim"}, headers=staff(signer))
    assert refused.status_code == 422
    assert (
        await service.put("/v1/ops/cabinets/CAB-0001/night-light", json={"mode": "on"}, headers=user(signer))
    ).status_code == 403


class Recorder:
    """Stands in for the MQTT downlink in the schedule's own test: what the schedule decided to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Light]] = []

    async def send(self, device_id: str, message: Light) -> None:
        self.sent.append((device_id, message))


async def test_the_schedule_lights_at_night_once_across_replicas_and_renews_before_expiry(
    service, fleet, online, database_url
):
    for cabinet_id in ("CAB-0001", "CAB-0002"):
        await online(cabinet_id)
    engine = make_engine(database_url, 2)
    try:
        sessionmaker = make_sessionmaker(engine)
        rules = LightRules(schedule_every_s=300)
        # The fleet is seeded around Shenzhen; 22:00 there.
        night = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
        first, second = Recorder(), Recorder()
        await run_schedule(sessionmaker, first, rules, night)  # type: ignore[arg-type]
        await run_schedule(sessionmaker, second, rules, night)  # type: ignore[arg-type]  # another replica
        assert sorted(d for d, _ in first.sent) == ["CAB-0001", "CAB-0002"] and not second.sent
        assert all(m.on and m.duration_s == 3600 for _, m in first.sent)
        # Five minutes later nothing runs out before the next run; 55 minutes later it is renewed.
        later = Recorder()
        await run_schedule(sessionmaker, later, rules, night + timedelta(minutes=5))  # type: ignore[arg-type]
        assert not later.sent
        await run_schedule(sessionmaker, later, rules, night + timedelta(minutes=55))  # type: ignore[arg-type]
        assert sorted(d for d, _ in later.sent) == ["CAB-0001", "CAB-0002"]
        # Commanded until sunrise at most: the morning needs no command (staff's "off" does: test above).
        before_dawn = datetime(2026, 12, 5, 22, 30, tzinfo=UTC)
        dawn = Recorder()
        await run_schedule(sessionmaker, dawn, rules, before_dawn)  # type: ignore[arg-type]
        rise = next_sunrise(22.54, 114.05, before_dawn)
        assert rise is not None and dawn.sent
        assert all(m.on and abs(m.duration_s - (rise - before_dawn).total_seconds()) < 300 for _, m in dawn.sent)
        morning = Recorder()
        await run_schedule(sessionmaker, morning, rules, rise + timedelta(hours=1))  # type: ignore[arg-type]
        assert not morning.sent
    finally:
        await engine.dispose()
