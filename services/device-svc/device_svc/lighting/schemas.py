from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kit.inputs import Latitude, Longitude

NightLightMode = Literal["auto", "on", "off"]


class LightMe(BaseModel):
    """Where the user stands (the phone's position): the light is lit only for someone near the cabinet."""

    model_config = ConfigDict(extra="forbid")

    lat: Latitude
    lon: Longitude


class LightAnswer(BaseModel):
    cabinet_id: str
    on: bool
    until: datetime
    cmd_id: str | None = Field(default=None, description="Absent when the light was already on")


class NightLightSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: NightLightMode = Field(description="auto: lit from local sunset to sunrise; on / off: an override")


class NightLightOut(BaseModel):
    cabinet_id: str
    mode: NightLightMode
    on_until: datetime | None
