"""Quiet hours: when a marketing push to a user may go out."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


def release_at(now: datetime, quiet_start: int | None, quiet_end: int | None, zone: str) -> datetime:
    """`now` outside the user's quiet hours, else the end of them (minutes after local midnight;
    start > end spans midnight; start == end: no quiet hours)."""
    if quiet_start is None or quiet_end is None or quiet_start == quiet_end:
        return now
    local = now.astimezone(ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    spans_midnight = quiet_start > quiet_end
    inside = (minute >= quiet_start or minute < quiet_end) if spans_midnight else quiet_start <= minute < quiet_end
    if not inside:
        return now
    end = local.replace(hour=quiet_end // 60, minute=quiet_end % 60, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end.astimezone(now.tzinfo)
