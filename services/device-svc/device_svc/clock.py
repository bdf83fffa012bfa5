"""Device clocks cannot be trusted blindly: every device time is checked against the server's."""

from datetime import UTC, datetime, timedelta


def ms_to_datetime(ms: int) -> datetime | None:
    """Epoch milliseconds -> aware UTC datetime; None when it is out of any sane range."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def datetime_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def checked_device_time(
    device_ms: int,
    received_at: datetime,
    *,
    not_before: datetime | None,
    max_skew_s: float,
) -> tuple[datetime, bool]:
    """The time to record for something a device says happened at `device_ms`.

    The device's time is used unless it is more than `max_skew_s` in the future of when the
    server received the report, or earlier than `not_before` (e.g. the bank's last state change:
    a bank cannot come back before it left). Then the server's receive time is used and the
    second value (clock_adjusted) is True.
    """
    device_time = ms_to_datetime(device_ms)
    if device_time is None:
        return received_at, True
    if device_time > received_at + timedelta(seconds=max_skew_s):
        return received_at, True
    if not_before is not None and device_time < not_before:
        return received_at, True
    return device_time, False
