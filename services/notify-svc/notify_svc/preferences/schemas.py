from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

LocalTime = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class MarketingConsent(BaseModel):
    """Consent to marketing per channel; service messages (rentals, payments, support) ignore it."""

    model_config = ConfigDict(extra="forbid")

    inbox: bool = False
    push: bool = False
    sms: bool = False


class QuietHours(BaseModel):
    """Local times; `start` after `end` spans midnight (22:00-08:00). Marketing pushes wait until `end`."""

    model_config = ConfigDict(extra="forbid")

    start: LocalTime
    end: LocalTime


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    marketing: MarketingConsent
    quiet_hours: QuietHours | None = None
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone such as Asia/Shanghai") from None
        return value


class PreferencesOut(PreferencesIn):
    updated_at: datetime | None
