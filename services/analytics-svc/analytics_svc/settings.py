from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "analytics-svc"
    # The time zone statistics are reported in (hour of day, day boundaries): env STATS_TIMEZONE.
    stats_timezone: str = "Asia/Shanghai"
    # A bank rented for longer than this counts as lost in banks per region.
    lost_after_hours: int = 72
    # How often the hourly rollup is rebuilt for the hours facts changed in (0: never, tests drive it).
    rollup_interval_s: float = 2.0

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
