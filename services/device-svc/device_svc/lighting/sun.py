"""Whether it is dark at a cabinet, from its position (astral: the sun's elevation and its next rise)."""

from datetime import datetime, timedelta

from astral import Observer
from astral.sun import elevation, sunrise

# The sun's upper limb on the horizon, with refraction: the usual definition of sunrise and sunset.
HORIZON_DEG = -0.833


def is_dark(lat: float, lon: float, at: datetime) -> bool:
    """Between local sunset and sunrise at `at` (an aware datetime)."""
    return elevation(Observer(lat, lon), at) < HORIZON_DEG


def next_sunrise(lat: float, lon: float, at: datetime) -> datetime | None:
    """The first sunrise after `at`, or None when the sun does not rise within two days (polar night)."""
    observer = Observer(lat, lon)
    for days in range(3):
        day = (at + timedelta(days=days)).date()
        try:
            rise = sunrise(observer, day)
        except ValueError:  # no sunrise that day (polar night or midnight sun)
            continue
        if rise > at:
            return rise
    return None
