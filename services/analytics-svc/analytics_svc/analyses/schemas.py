from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from contracts.regions import DivisionLevel


class Filters(BaseModel):
    region: str | None = Field(description="Division code the figures are limited to (null: everywhere)")
    timezone: str
    from_: date | None = Field(default=None, serialization_alias="from")
    to: date | None = None


class BanksRow(BaseModel):
    division_code: str = Field(description="'' when the division is unknown")
    name: str
    in_cabinets: int = Field(description="Banks in cabinet slots (the newest stock report of each cabinet)")
    rented: int
    faulty: int
    lost: int = Field(description="Sold by the purchase ceiling, or rented for longer than `lost_after_hours`")


class BanksPerRegionOut(BaseModel):
    filters: Filters
    level: DivisionLevel
    lost_after_hours: int
    rows: list[BanksRow]


class ActiveUsersRow(BaseModel):
    period_start: date
    active: int
    new: int = Field(description="Active users whose first rental ever falls in this period")
    returning: int


class ActiveUsersOut(BaseModel):
    filters: Filters
    granularity: Literal["day", "week", "month"]
    rows: list[ActiveUsersRow]


class RentalsRow(BaseModel):
    bucket: str = Field(description="Hour of day (0-23), local date, or local hour start")
    rentals: int


class RentalsOut(BaseModel):
    filters: Filters
    granularity: Literal["hour_of_day", "day", "hour"]
    rows: list[RentalsRow]


class RegionRow(BaseModel):
    rank: int
    division_code: str
    name: str
    rentals: int


class RegionsOut(BaseModel):
    filters: Filters
    level: DivisionLevel
    rows: list[RegionRow]


class CellRow(BaseModel):
    cell: str = Field(description="H3 cell")
    lat: float
    lon: float
    rentals: int


class HeatMapOut(BaseModel):
    filters: Filters
    resolution: int
    rows: list[CellRow]


class FlowRow(BaseModel):
    origin: str
    origin_name: str
    destination: str
    destination_name: str
    rentals: int


class FlowsOut(BaseModel):
    filters: Filters
    level: DivisionLevel
    rows: list[FlowRow]
