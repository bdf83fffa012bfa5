"""Nearest cabinets through the GiST index on ll_to_earth(lat, lon) (cube + earthdistance)."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import Cabinet
from device_svc.registry.repository import available_banks_subquery, occupied_slots_subquery


async def cabinets_near(
    session: AsyncSession,
    lat: float,
    lon: float,
    radius_m: float,
    limit: int,
    min_battery_pct: int,
) -> Sequence[Any]:
    """(Cabinet, banks_available, occupied, distance_m) of active cabinets within `radius_m` of
    the point, nearest first. `earth_box @>` is the indexed pre-filter; `earth_distance` the exact
    great-circle distance."""
    here = func.ll_to_earth(lat, lon)
    there = func.ll_to_earth(Cabinet.lat, Cabinet.lon)
    distance = func.earth_distance(here, there).label("distance_m")
    stmt = (
        select(
            Cabinet,
            available_banks_subquery(min_battery_pct).label("banks_available"),
            occupied_slots_subquery().label("occupied"),
            distance,
        )
        .where(
            func.earth_box(here, radius_m).op("@>")(there),
            func.earth_distance(here, there) <= radius_m,
            Cabinet.state == "active",
        )
        .order_by(distance, Cabinet.id)
        .limit(limit)
    )
    return (await session.execute(stmt)).all()
