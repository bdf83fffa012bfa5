"""6.1.4 map (cabinets near the user with rentable banks, walking estimate) and 6.1.10 return
guidance (cabinets with a free slot near the trip's destination)."""

import math
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.geo import repository as repo
from device_svc.geo.schemas import NearbyCabinetOut
from device_svc.registry.service import cabinet_out

# City streets are not straight lines: a walking route is about 1.3 x the great-circle distance;
# people walk about 80 m a minute.
DETOUR_FACTOR = 1.3
WALK_M_PER_MIN = 80.0


def walking_estimate(distance_m: float) -> tuple[int, int]:
    walking = distance_m * DETOUR_FACTOR
    return round(walking), max(1, math.ceil(walking / WALK_M_PER_MIN)) if walking > 0 else 0


def _nearby_out(row: Any) -> NearbyCabinetOut:
    cabinet, available, occupied, distance = row
    walking_m, minutes = walking_estimate(float(distance))
    return NearbyCabinetOut(
        **cabinet_out((cabinet, available, occupied)),
        distance_m=round(float(distance)),
        walking_distance_m=walking_m,
        walking_minutes=minutes,
        region=cabinet.region,
        opening_hours=cabinet.opening_hours,
    )


async def nearby(
    session: AsyncSession,
    lat: float,
    lon: float,
    *,
    radius_m: int,
    limit: int,
    min_battery_pct: int,
    available_only: bool,
) -> list[NearbyCabinetOut]:
    # Ask for more than `limit` when filtering afterwards, so that the nearest matches still fill it.
    fetch = limit * 4 if available_only else limit
    rows = await repo.cabinets_near(session, lat, lon, radius_m, fetch, min_battery_pct)
    items = [_nearby_out(row) for row in rows]
    if available_only:
        items = [c for c in items if c.banks_available > 0]
    return items[:limit]


async def return_guidance(
    session: AsyncSession, lat: float, lon: float, *, radius_m: int, limit: int, min_battery_pct: int
) -> list[NearbyCabinetOut]:
    rows = await repo.cabinets_near(session, lat, lon, radius_m, limit * 4, min_battery_pct)
    items = [_nearby_out(row) for row in rows]
    return [c for c in items if c.online and c.free_slots > 0][:limit]
