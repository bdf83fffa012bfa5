"""A deregistered user's whereabouts leave analytics (issue 15; docs/accounts.md "Erasure").

Their rentals (where they started and ended), active days (in which district) and active periods (in which
regions) are moved to a random pseudonym, one per user and kept nowhere, so every count (rentals, distinct
riders, active users) stays right and nothing ties them to the person any more. `user_facts` keeps the user
id with the registration, credit and deregistration times (no place, no birth year: erased at once by the
consumer). A job does it `erasure_delay_s` after the deregistration, so the facts of the user's last rental,
published before it but read from other topics, have arrived; all users due in one pass per table."""

import logging
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import unit_of_work

log = logging.getLogger(__name__)

_LOCK = 0x45524153  # one replica at a time
_DUE = text(
    "CREATE TEMP TABLE erasing ON COMMIT DROP AS SELECT user_id, gen_random_uuid() AS pseudonym FROM user_facts "
    "WHERE deregistered_at IS NOT NULL AND pseudonymised_at IS NULL AND deregistered_at <= :due "
    "ORDER BY deregistered_at LIMIT :batch"
)
_MOVE = [
    text(f"UPDATE {table} t SET user_id = e.pseudonym FROM erasing e WHERE t.user_id = e.user_id")  # noqa: S608
    for table in ("rental_facts", "user_days", "active_user_periods")
]
_DONE = text("UPDATE user_facts u SET pseudonymised_at = :now FROM erasing e WHERE u.user_id = e.user_id")


async def pseudonymise_due(
    sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime, delay_s: float, batch: int = 1000
) -> int:
    """Users deregistered more than `delay_s` before `now` and not done yet, at most `batch`; how many."""
    async with unit_of_work(sessionmaker) as session:
        if not (await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK})).scalar():
            return 0
        await session.execute(_DUE, {"due": now - timedelta(seconds=delay_s), "batch": batch})
        users = (await session.execute(text("SELECT count(*) FROM erasing"))).scalar_one()
        if users:
            for statement in _MOVE:
                await session.execute(statement)
            await session.execute(_DONE, {"now": now})
            log.info("deregistered users' facts pseudonymised", extra={"users": users})
    return int(users)
