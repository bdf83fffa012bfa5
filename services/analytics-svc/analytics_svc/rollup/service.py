"""Keeps `rental_rollup_hourly` equal to the facts: every hour a fact changed in is rebuilt from
`rental_facts` (a periodic job; the consumers only mark hours dirty)."""

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics_svc.rollup import repository
from kit.db import unit_of_work

BATCH_HOURS = 200


async def refresh(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Rebuild dirty hours, a batch per transaction, until none are left. Returns hours rebuilt."""
    total = 0
    while True:
        async with unit_of_work(sessionmaker) as session:
            n = await repository.rebuild_dirty_hours(session, BATCH_HOURS)
        total += n
        if n < BATCH_HOURS:
            return total
