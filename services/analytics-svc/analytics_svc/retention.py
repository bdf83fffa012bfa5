"""What analytics-svc must not keep forever (issue 15; docs/accounts.md "Retention"): bank module positions
(`bank_position_facts`: a rented bank's points are its renter's route, at cell resolution) go once older
than `position_retention_s`, oldest first through their time index, a batch per transaction."""

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics_svc.settings import Settings
from kit.retention import TimeIndexed, prune_by_time

POSITIONS = TimeIndexed("bank_position_facts", ("bank_id", "at"), "at")


async def prune_positions(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime) -> int:
    return await prune_by_time(
        sessionmaker,
        POSITIONS,
        older_than=now - timedelta(seconds=settings.position_retention_s),
        batch=settings.retention_batch,
        max_batches=settings.retention_max_batches,
    )
