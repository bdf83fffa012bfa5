from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field


class HourBucket(BaseModel):
    hour: Annotated[int, Field(ge=0, le=23, description="Hour of day in `timezone`")]
    rentals: int


class RentalsPerHourOut(BaseModel):
    timezone: str
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    buckets: list[HourBucket]


class OverviewOut(BaseModel):
    users_registered: int
    rentals_started: int
    rentals_ended: int
    revenue_fen: int
    active_rentals: int
