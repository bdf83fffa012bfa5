"""How figures read on every page: money in yuan with fen precision, times in the operator's zone,
phone numbers masked for roles that may not see them."""

import re
from datetime import datetime
from zoneinfo import ZoneInfo

YUAN_INPUT = re.compile(r"^\s*¥?\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$")


def yuan(fen: int | None) -> str:
    if fen is None:
        return "-"
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{part:02d}"


def fen_of(text: str) -> int:
    """What staff type as yuan ("1.5", "¥12.05", "3") in integer fen; no sign, at most two decimals."""
    found = YUAN_INPUT.match(text.replace(",", ""))
    if found is None:
        raise ValueError(f"not an amount in yuan: {text!r}")
    whole, part = found.group(1), (found.group(2) or "").ljust(2, "0")
    return int(whole) * 100 + int(part)


def local_time(value: str | datetime | None, zone: ZoneInfo, *, seconds: bool = False) -> str:
    """An ISO-8601 time from a service, in the operator's zone ("-" when absent)."""
    if value is None or value == "":
        return "-"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.isoformat(sep=" ")
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def mask_phone(phone: str | None) -> str:
    """+8613812345678 -> +86138****5678: enough to recognise a caller, not to call them."""
    if not phone:
        return "-"
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:-8] + "****" + phone[-4:]


def percent(part: int, whole: int) -> str:
    return "-" if whole <= 0 else f"{round(100 * part / whole)}%"
