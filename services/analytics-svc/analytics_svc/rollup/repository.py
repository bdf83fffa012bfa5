"""The hourly rental rollup's SQL. Never commits."""

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Claimed rows stay locked until the refresh commits: another replica skips them, and a consumer
# marking the same hour again waits, then inserts a new mark the next run picks up.
_CLAIM = text("SELECT hour FROM rollup_dirty_hours ORDER BY hour LIMIT :limit FOR UPDATE SKIP LOCKED")
_DROP = text("DELETE FROM rental_rollup_hourly WHERE hour = ANY(:hours)")
_BUILD = text(
    """
    INSERT INTO rental_rollup_hourly (hour, start_division, start_cell, return_division, rentals, returned)
    SELECT date_trunc('hour', started_at), coalesce(start_division, ''), coalesce(start_cell, ''),
           coalesce(return_division, ''), count(*), count(ended_at)
    FROM rental_facts
    WHERE date_trunc('hour', started_at) = ANY(:hours)
    GROUP BY 1, 2, 3, 4
    """
)
_DONE = text("DELETE FROM rollup_dirty_hours WHERE hour = ANY(:hours)")


async def rebuild_dirty_hours(session: AsyncSession, limit: int) -> int:
    hours: list[datetime] = list((await session.execute(_CLAIM, {"limit": limit})).scalars())
    if not hours:
        return 0
    await session.execute(_DROP, {"hours": hours})
    await session.execute(_BUILD, {"hours": hours})
    await session.execute(_DONE, {"hours": hours})
    return len(hours)


async def dirty_hours(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM rollup_dirty_hours"))).scalar_one())
