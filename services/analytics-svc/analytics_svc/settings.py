from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "analytics-svc"
    # The time zone statistics are reported in (hour of day, day boundaries): env STATS_TIMEZONE.
    stats_timezone: str = "Asia/Shanghai"

    @field_validator("stats_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.stats_timezone)
