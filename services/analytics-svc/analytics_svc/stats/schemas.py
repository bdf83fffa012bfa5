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
    # With `since` (say the start of the operator's day): rentals started since, and the fees of the
    # rentals that ended since (revenue is counted when a rental ends). Null without it.
    since: datetime | None = None
    rentals_started_since: int | None = None
    revenue_since_fen: int | None = None
