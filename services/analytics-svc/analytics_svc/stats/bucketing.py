"""Hour-of-day bucketing in the configured time zone. Pure, so it is unit-tested directly.

The database counts rentals per 15-minute slot (UTC); every real time zone's offset is a multiple
of 15 minutes, so each slot lies within one local hour, and this module adds slots into the
local hour they start in (daylight-saving changes included)."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SLOT = timedelta(minutes=15)
HOURS = 24


def local_hour(at: datetime, zone: ZoneInfo) -> int:
    if at.tzinfo is None:
        raise ValueError("a naive time has no hour of day in a time zone")
    return at.astimezone(zone).hour


def buckets_by_local_hour(slots: Iterable[tuple[datetime, int]], zone: ZoneInfo) -> list[int]:
    """Counts per (slot start, count) -> 24 counts, index = local hour of day."""
    counts = [0] * HOURS
    for start, count in slots:
        counts[local_hour(start, zone)] += count
    return counts


def window(now: datetime, days: int) -> tuple[datetime, datetime]:
    """The last `days` days up to `now`, as [from, to) in UTC."""
    to = now.astimezone(UTC)
    return to - timedelta(days=days), to
