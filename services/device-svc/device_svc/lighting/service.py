"""The night light: a user near a cabinet lights it to scan its code; a schedule lights every cabinet from
local sunset to sunrise (its own position) unless an operator switched it on or off for good."""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.mqtt import Light
from device_svc.clock import datetime_to_ms
from device_svc.lighting import repository as repo
from device_svc.lighting.schemas import LightAnswer, LightMe, NightLightMode, NightLightOut
from device_svc.lighting.sun import is_dark, next_sunrise
from device_svc.metrics import COMMANDS_DOWN
from device_svc.mqtt.downlink import Downlink
from device_svc.ops.service import DeviceOffline, NotCarried
from device_svc.registry.service import CabinetNotFound
from kit.db import after_commit, unit_of_work
from kit.errors import Forbidden, TooManyRequests

log = logging.getLogger(__name__)

MAX_LIGHT_S = 3600  # the protocol's longest `light` command (contracts.mqtt.Light)
COMMAND_TTL_S = 10  # a cabinet drops a light command it gets later than this


class NotNearCabinet(Forbidden):
    code = "not_near_cabinet"
    title = "The light is lit only for someone at the cabinet"


@dataclass(frozen=True)
class LightRules:
    user_light_s: int = 60
    max_distance_m: float = 200.0
    user_limit: int = 5
    user_window_s: float = 600.0
    schedule_every_s: float = 300.0


def light_command(now: datetime, on: bool, duration_s: int) -> Light:
    expires = now + timedelta(seconds=COMMAND_TTL_S)
    return Light(
        cmd_id=str(uuid.uuid4()),
        expires_at=datetime_to_ms(expires),
        on=on,
        duration_s=max(1, min(duration_s, MAX_LIGHT_S)),
    )


async def _send(downlink: Downlink, cabinet_id: str, msg: Light) -> None:
    try:
        await downlink.send(cabinet_id, msg)
        COMMANDS_DOWN.labels("light", "sent").inc()
    except Exception as exc:
        COMMANDS_DOWN.labels("light", "not_sent").inc()
        log.warning("light not sent", extra={"device_id": cabinet_id, "error": repr(exc)})


async def light_for_user(
    session: AsyncSession,
    downlink: Downlink,
    rules: LightRules,
    user_id: UUID,
    cabinet_id: str,
    where: LightMe,
    now: datetime,
) -> LightAnswer:
    """Light a cabinet for a user standing near it (at most `user_limit` times per window), unless the
    schedule already has it lit; the command leaves after the request is recorded."""
    found = await repo.cabinet_and_distance(session, cabinet_id, where.lat, where.lon)
    if found is None or found[0].state == "retired":
        raise CabinetNotFound(f"Cabinet {cabinet_id} is not registered")
    cabinet, distance_m = found
    if cabinet.protocol != "native" and not await downlink.carries(cabinet_id, "light"):
        raise NotCarried(f"Cabinet {cabinet_id} has no light its protocol can switch on")
    if distance_m > rules.max_distance_m:
        raise NotNearCabinet(
            f"You are {distance_m:.0f} m from cabinet {cabinet_id}; come within {rules.max_distance_m:.0f} m"
        )
    count, oldest = await repo.recent_requests(session, user_id, now - timedelta(seconds=rules.user_window_s))
    if count >= rules.user_limit and oldest is not None:
        wait = (oldest + timedelta(seconds=rules.user_window_s) - now).total_seconds()
        limit = f"At most {rules.user_limit} light requests per {rules.user_window_s:.0f} s"
        raise TooManyRequests(limit, retry_after_s=wait)
    if not cabinet.online:
        COMMANDS_DOWN.labels("light", "offline").inc()
        raise DeviceOffline(f"Cabinet {cabinet_id} is offline")
    repo.record_request(session, user_id, cabinet_id, now)
    lit_until = now + timedelta(seconds=rules.user_light_s)
    if cabinet.light_on_until is not None and cabinet.light_on_until >= lit_until:
        return LightAnswer(cabinet_id=cabinet_id, on=True, until=cabinet.light_on_until)
    msg = light_command(now, True, rules.user_light_s)

    async def send() -> None:
        await _send(downlink, cabinet_id, msg)

    after_commit(session, send)
    log.info("night light for a user", extra={"device_id": cabinet_id, "user_id": str(user_id)})
    return LightAnswer(cabinet_id=cabinet_id, on=True, until=lit_until, cmd_id=msg.cmd_id)


async def set_mode(session: AsyncSession, cabinet_id: str, mode: NightLightMode, by: str) -> NightLightOut:
    cabinet = await repo.set_mode(session, cabinet_id, mode)
    if cabinet is None:
        raise CabinetNotFound(f"Cabinet {cabinet_id} is not registered")
    log.info("night light mode set", extra={"device_id": cabinet_id, "mode": mode, "by": by})
    return NightLightOut(cabinet_id=cabinet_id, mode=mode, on_until=cabinet.light_on_until)


def wanted_until(rules: LightRules, mode: str, lat: float, lon: float, now: datetime) -> datetime | None:
    """Until when the cabinet's light should be on from now (None: off). A scheduled light is commanded for
    at most an hour (the protocol's limit) and renewed by the next runs; an `auto` one ends at sunrise."""
    if mode == "off" or (mode == "auto" and not is_dark(lat, lon, now)):
        return None
    until = now + timedelta(seconds=MAX_LIGHT_S)
    if mode == "auto":
        rise = next_sunrise(lat, lon, now)
        if rise is not None:
            until = min(until, rise)
    return until


async def run_schedule(
    sessionmaker: async_sessionmaker[AsyncSession], downlink: Downlink, rules: LightRules, now: datetime
) -> int:
    """One run of the schedule: light the cabinets that should be lit and whose light runs out before the next
    run (renewed), switch off those lit that should not be; returns the commands sent. Replicas claim
    cabinets in the database, so each command leaves once."""
    async with unit_of_work(sessionmaker) as session:
        candidates = await repo.schedule_candidates(session, now)
    wanted: dict[str, datetime] = {}
    unwanted: list[str] = []
    for row in candidates:
        until = wanted_until(rules, row.night_light, row.lat, row.lon, now)
        if until is not None:
            wanted[row.id] = until
        elif row.light_on_until is not None and row.light_on_until > now:
            unwanted.append(row.id)
    refresh_before = now + timedelta(seconds=rules.schedule_every_s * 1.5)
    async with unit_of_work(sessionmaker) as session:
        lit = await repo.claim_light_on(session, wanted, refresh_before)
        dark = await repo.claim_light_off(session, unwanted, now)
        # Users' light requests are kept for their limit's window only.
        await repo.prune_requests(session, now - timedelta(seconds=rules.user_window_s))
    commands = [(c, light_command(now, True, int((until - now).total_seconds()))) for c, until in lit.items()]
    commands += [(cabinet_id, light_command(now, False, 1)) for cabinet_id in dark]
    limit = asyncio.Semaphore(50)

    async def send(cabinet_id: str, msg: Light) -> None:
        async with limit:
            await _send(downlink, cabinet_id, msg)

    await asyncio.gather(*(send(c, m) for c, m in commands))
    if commands:
        log.info("night light schedule", extra={"lit": len(lit), "switched_off": len(dark)})
    return len(commands)
