"""GET /v1/cabinets/nearby (map) and GET /v1/cabinets/return-guidance."""

from typing import Annotated

from fastapi import APIRouter, Query

from device_svc.geo import service
from device_svc.geo.schemas import NearbyList
from device_svc.registry.endpoints import Viewer, min_battery
from kit.app import RuntimeDep
from kit.auth import user_scope
from kit.db import SessionDep
from kit.inputs import Latitude, Longitude

router = APIRouter(prefix="/v1", tags=["map"], dependencies=[user_scope("map")])

Lat = Annotated[Latitude, Query()]
Lon = Annotated[Longitude, Query()]
Radius = Annotated[int, Query(ge=1, le=50_000)]
Limit = Annotated[int, Query(ge=1, le=100)]


@router.get("/cabinets/nearby", response_model=NearbyList)
async def nearby(
    lat: Lat,
    lon: Lon,
    _: Viewer,
    session: SessionDep,
    runtime: RuntimeDep,
    radius_m: Radius = 2000,
    limit: Limit = 20,
    available_only: bool = False,
) -> NearbyList:
    """Cabinets within `radius_m` of the user, nearest first, with rentable bank counts and a walking
    distance estimate."""
    items = await service.nearby(
        session,
        lat,
        lon,
        radius_m=radius_m,
        limit=limit,
        min_battery_pct=min_battery(runtime),
        available_only=available_only,
    )
    return NearbyList(lat=lat, lon=lon, radius_m=radius_m, items=items)


@router.get("/cabinets/return-guidance", response_model=NearbyList)
async def return_guidance(
    lat: Lat,
    lon: Lon,
    _: Viewer,
    session: SessionDep,
    runtime: RuntimeDep,
    radius_m: Radius = 3000,
    limit: Limit = 5,
) -> NearbyList:
    """Online cabinets with a free slot near the trip's destination, nearest first."""
    items = await service.return_guidance(
        session, lat, lon, radius_m=radius_m, limit=limit, min_battery_pct=min_battery(runtime)
    )
    return NearbyList(lat=lat, lon=lon, radius_m=radius_m, items=items)
