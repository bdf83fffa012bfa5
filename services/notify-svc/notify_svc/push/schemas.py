from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

PushTokenValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9:_.\-]{8,400}$")]


class PushTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["ios", "android"]
    token: PushTokenValue


class PushTokenOut(BaseModel):
    platform: str
    token_suffix: str
    registered_at: datetime


class PushTokenList(BaseModel):
    items: list[PushTokenOut]


class PushJobOut(BaseModel):
    message_id: str | None
    title: str
    critical: bool
    attempts: int
    outcome: str | None
    results: dict[str, str] | None
    created_at: datetime
    done_at: datetime | None


class PushJobList(BaseModel):
    items: list[PushJobOut]
