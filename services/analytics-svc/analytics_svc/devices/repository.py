"""SQL of the communication-status and operating-state overviews. Never commits."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.analyses.repository import _in_region, _level, _sql
from contracts.regions import DivisionLevel

# Every known device with its division: cabinets from their region facts and presence (either may be
# missing), bank modules from presence with the division of their newest bank fact.
_DEVICES = """
    SELECT coalesce(cr.cabinet_id, p.device_id) AS device_id, 'cabinet' AS kind, cr.division, p.online,
           p.last_seen_at, cr.banks_present, cr.slot_count
      FROM cabinet_regions cr
      FULL JOIN (SELECT * FROM device_presence WHERE kind = 'cabinet') p ON p.device_id = cr.cabinet_id
    UNION ALL
    SELECT p.device_id, 'bank', bf.division, p.online, p.last_seen_at, NULL, NULL
      FROM device_presence p LEFT JOIN bank_facts bf ON bf.bank_id = p.device_id
     WHERE p.kind = 'bank'
"""


@dataclass(frozen=True)
class StatusCounts:
    division: str
    kind: str
    devices: int
    online: int
    offline: int
    never_heard: int
    silent: int
    seen_under_1h: int
    seen_1h_to_24h: int
    seen_1d_to_7d: int
    seen_over_7d: int
    empty: int
    full: int


@dataclass(frozen=True)
class SilentDevice:
    device_id: str
    kind: str
    division: str
    last_seen_at: datetime | None


async def status_counts(
    session: AsyncSession, region: str | None, level: DivisionLevel, now: datetime, silent_before: datetime
) -> list[StatusCounts]:
    """Per division and kind. Last seen is bucketed for offline devices (an online one is heard now)."""
    params: dict[str, Any] = {
        "silent_before": silent_before,
        "hour_ago": now - timedelta(hours=1),
        "day_ago": now - timedelta(days=1),
        "week_ago": now - timedelta(days=7),
    }
    sql = _sql(
        """WITH d AS ({devices})
        SELECT {f0} AS division, kind, count(*),
          count(*) FILTER (WHERE online),
          count(*) FILTER (WHERE NOT online),
          count(*) FILTER (WHERE online IS NULL),
          count(*) FILTER (WHERE NOT online AND (last_seen_at IS NULL OR last_seen_at < :silent_before)),
          count(*) FILTER (WHERE NOT online AND last_seen_at >= :hour_ago),
          count(*) FILTER (WHERE NOT online AND last_seen_at < :hour_ago
                                            AND last_seen_at >= :day_ago),
          count(*) FILTER (WHERE NOT online AND last_seen_at < :day_ago
                                            AND last_seen_at >= :week_ago),
          count(*) FILTER (WHERE NOT online AND last_seen_at < :week_ago),
          count(*) FILTER (WHERE banks_present = 0),
          count(*) FILTER (WHERE slot_count > 0 AND banks_present >= slot_count)
        FROM d WHERE {f1} GROUP BY 1, 2 ORDER BY 1, 2""",
        devices=_DEVICES,
        f0=_level("division", level),
        f1=_in_region("division", region, params),
    )
    rows = (await session.execute(sql, params)).all()
    return [StatusCounts(*(row[:2]), *(int(v) for v in row[2:])) for row in rows]


async def silent_devices(
    session: AsyncSession, region: str | None, kind: str | None, silent_before: datetime, limit: int
) -> list[SilentDevice]:
    """Offline devices last heard before `silent_before`, or never, the longest silent first."""
    params: dict[str, Any] = {"silent_before": silent_before, "limit": limit, "kind": kind}
    sql = _sql(
        """WITH d AS ({devices})
        SELECT device_id, kind, coalesce(division, ''), last_seen_at FROM d
        WHERE {f1} AND (CAST(:kind AS text) IS NULL OR kind = :kind)
          AND (online IS NULL OR (NOT online AND (last_seen_at IS NULL OR last_seen_at < :silent_before)))
        ORDER BY last_seen_at NULLS FIRST, device_id LIMIT :limit""",
        devices=_DEVICES,
        f1=_in_region("division", region, params),
    )
    return [SilentDevice(*row) for row in (await session.execute(sql, params)).all()]
