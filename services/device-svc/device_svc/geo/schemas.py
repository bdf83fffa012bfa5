"""Map and return guidance responses."""

from pydantic import BaseModel

from device_svc.registry.schemas import CabinetOut


class NearbyCabinetOut(CabinetOut):
    distance_m: int  # straight line (great circle)
    walking_distance_m: int  # estimate: straight line x detour factor
    walking_minutes: int
    region: str
    opening_hours: str


class NearbyList(BaseModel):
    lat: float
    lon: float
    radius_m: int
    items: list[NearbyCabinetOut]
