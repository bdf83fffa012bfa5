import uuid
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, StringConstraints, UrlConstraints, model_validator

from contracts.regions import DivisionCode
from kit.inputs import UtcDatetime
from notify_svc.models import AdSlot

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# Media and links are fetched by phones and cabinet screens: https only, no credentials in them.
HttpsUrl = Annotated[AnyUrl, UrlConstraints(max_length=300, allowed_schemes=["https"])]

LABEL: Literal["advertisement"] = "advertisement"
MAX_DAYS = 366


class AdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slot: AdSlot
    advertiser: Name
    title: Name
    text: Text
    media_url: HttpsUrl | None = Field(default=None, description="the banner or screen image / video (https)")
    link_url: HttpsUrl | None = Field(default=None, description="where a tap on an app banner leads (https)")
    display_s: int = Field(default=15, ge=5, le=300, description="seconds on a cabinet screen per turn")
    regions: list[DivisionCode] = Field(
        default_factory=list, max_length=50, description="division codes it is shown in (or within); none: everywhere"
    )
    starts_at: UtcDatetime
    ends_at: UtcDatetime

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if (self.ends_at - self.starts_at).days > MAX_DAYS:
            raise ValueError(f"an ad runs at most {MAX_DAYS} days")
        if self.slot is AdSlot.CABINET_SCREEN and self.link_url is not None:
            raise ValueError("a cabinet screen cannot be tapped: no link_url")
        self.regions = sorted(set(self.regions))
        return self


class AdOut(BaseModel):
    ad_id: uuid.UUID
    label: Literal["advertisement"] = Field(default=LABEL, description="shown with the ad, always")
    slot: AdSlot
    advertiser: str
    title: str
    text: str
    media_url: str | None
    link_url: str | None
    display_s: int
    regions: list[str]
    starts_at: datetime
    ends_at: datetime


class AdCounts(BaseModel):
    impressions: int = Field(
        description="app banners: distinct viewers per day who were shown it; cabinet screens: the turns it was "
        "played, as the cabinets reported them (each report counted once)"
    )
    clicks: int = Field(description="distinct viewers per day who tapped it (app banners)")
    screens: int | None = Field(default=None, description="cabinet screens: how many cabinets played it")


class StaffAdOut(AdOut):
    created_by: str
    created_at: datetime
    withdrawn_at: datetime | None
    counts: AdCounts


class AdList(BaseModel):
    items: list[AdOut]


class StaffAdList(BaseModel):
    items: list[StaffAdOut]


class Counted(BaseModel):
    ad_id: uuid.UUID
    counted: bool = Field(description="false: this viewer was already counted for it today")
    link_url: str | None = None
