import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ClearIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=500, description="What was checked or repaired")


class FaultReportOut(BaseModel):
    ticket_id: uuid.UUID
    bank_id: str
    kind: str
    cabinet_id: str | None
    reported_at: datetime


class FaultReportList(BaseModel):
    items: list[FaultReportOut]


class Cleared(BaseModel):
    bank_id: str
    ticket_ids: list[uuid.UUID]
    cleared_at: datetime
