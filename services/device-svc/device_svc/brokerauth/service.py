"""What a device-svc replica does about the brokers after changing a credential: wait until every live
broker's sidecar has applied the change (or the budget is spent)."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_svc.brokerauth import repository

# A sidecar reports at least every resync interval (30 s by default); one silent for this long is gone.
LIVE_WITHIN = timedelta(seconds=90)
POLL_S = 0.05


async def wait_for_brokers(sessionmaker: async_sessionmaker[AsyncSession], version: int, budget_s: float) -> bool:
    """True once at least one broker is live and every live broker applied `version` or later; False when
    `budget_s` passes first (no sidecar running, or one behind: the change reaches the broker later)."""
    deadline = time.monotonic() + budget_s
    while True:
        async with sessionmaker() as session:
            syncs = await repository.live_syncs(session, datetime.now(UTC) - LIVE_WITHIN)
        if syncs and all(applied >= version for _, applied in syncs):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
