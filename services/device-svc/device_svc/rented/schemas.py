from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    granted: bool


class ConsentOut(BaseModel):
    granted: bool
    changed_at: datetime | None


class Position(BaseModel):
    lat: float
    lon: float
    reported_at: datetime


class RentedBankOut(BaseModel):
    bank_id: str
    rental_id: UUID
    battery_pct: int | None
    has_module: bool
    position_consent: bool
    position: Position | None = None
