import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9]{5,15}$")]


class CallbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: Phone
    topic: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    preferred_at: AwareDatetime | None = Field(default=None, description="when the user would like the call")
    ticket_id: uuid.UUID | None = Field(default=None, description="one of your tickets; absent: a new one")


class CallbackOut(BaseModel):
    callback_id: uuid.UUID
    ticket_id: uuid.UUID
    phone_suffix: str = Field(description="the last 4 digits only")
    topic: str
    preferred_at: datetime | None
    status: str
    attempts: int
    duration_s: int | None
    failure: str | None
    created_at: datetime
    updated_at: datetime


class CallbackList(BaseModel):
    items: list[CallbackOut]


class HotlineOut(BaseModel):
    hotline: str
    hours: str


class ProviderEvent(BaseModel):
    """What the telephony provider reports about a call it placed."""

    model_config = ConfigDict(extra="ignore")

    call_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    reference: Annotated[str, StringConstraints(max_length=64)] = ""
    outcome: Literal["answered", "no_answer", "failed"]
    duration_s: int = Field(default=0, ge=0, le=24 * 3600)
    failure: Annotated[str, StringConstraints(max_length=100)] | None = None
    at: AwareDatetime
