"""Unit tests: hour-of-day bucketing and the time-zone setting (no database, no broker)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from analytics_svc.settings import Settings
from analytics_svc.stats.bucketing import buckets_by_local_hour, local_hour, window

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_local_hour_follows_the_zone():
    moment = at("2025-03-01T02:30:00+00:00")
    assert local_hour(moment, SHANGHAI) == 10
    assert local_hour(moment, ZoneInfo("UTC")) == 2
    assert local_hour(at("2025-03-01T18:00:00+00:00"), SHANGHAI) == 2  # next day, 02:00 in Shanghai
    with pytest.raises(ValueError):
        local_hour(datetime(2025, 3, 1, 2, 30), SHANGHAI)


def test_buckets_are_always_24_and_keep_every_rental():
    assert buckets_by_local_hour([], SHANGHAI) == [0] * 24
    slots = [
        (at("2025-03-01T00:00:00+00:00"), 2),
        (at("2025-03-01T00:45:00+00:00"), 1),
        (at("2025-03-02T00:15:00+00:00"), 4),
        (at("2025-03-01T16:00:00+00:00"), 3),
    ]
    shanghai = buckets_by_local_hour(slots, SHANGHAI)
    assert len(shanghai) == 24
    assert sum(shanghai) == 10
    assert shanghai[8] == 7  # 00:xx UTC is 08:xx in Shanghai, on both days
    assert shanghai[0] == 3  # 16:00 UTC is midnight in Shanghai
    utc = buckets_by_local_hour(slots, ZoneInfo("UTC"))
    assert utc[0] == 7
    assert utc[16] == 3


def test_quarter_hour_slots_split_correctly_in_half_hour_zones():
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30
    slots = [(at("2025-03-01T00:15:00+00:00"), 1), (at("2025-03-01T00:30:00+00:00"), 1)]
    counts = buckets_by_local_hour(slots, kolkata)
    assert counts[5] == 1  # 05:45
    assert counts[6] == 1  # 06:00


def test_daylight_saving_time_is_respected():
    new_york = ZoneInfo("America/New_York")
    winter = at("2025-01-15T14:00:00+00:00")  # 09:00 EST
    summer = at("2025-07-15T14:00:00+00:00")  # 10:00 EDT
    counts = buckets_by_local_hour([(winter, 1), (summer, 1)], new_york)
    assert counts[9] == 1
    assert counts[10] == 1


def test_window_is_the_last_n_days_in_utc():
    now = datetime(2025, 3, 8, 12, 0, tzinfo=SHANGHAI)
    start, end = window(now, 7)
    assert end == now
    assert end.tzinfo is UTC
    assert end - start == timedelta(days=7)


def test_settings_refuse_an_unknown_zone():
    assert Settings(stats_timezone="Europe/Berlin").zone == ZoneInfo("Europe/Berlin")
    assert Settings().stats_timezone == "Asia/Shanghai"
    with pytest.raises(ValidationError):
        Settings(stats_timezone="Mars/Olympus_Mons")
    with pytest.raises(ValidationError):
        Settings(stats_timezone="../etc/passwd")
