"""The fan-out loop, run by notify-svc's periodic job `campaign-sender` and by
`python -m notify_svc.campaigns.fanout` (the same loop in a process of its own: the crash test kills it
with SIGKILL mid-campaign and starts another, and the benchmark times it). Each batch is its own unit of
work; see `service.send_next_batch` for why a crash neither repeats nor skips anyone."""

import argparse
import asyncio
import logging
import os
import time
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import after_commit, make_engine, make_sessionmaker, unit_of_work
from kit.outbox import OutboxWakeup
from kit.periodic import Alarm
from notify_svc.campaigns import service

log = logging.getLogger(__name__)


async def drain(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    batch_size: int,
    budget_s: float | None = None,
    wakeup: OutboxWakeup | None = None,
    pushes: Alarm | None = None,
    held_sms: Alarm | None = None,
) -> datetime | None:
    """Send batches until nothing is due or `budget_s` is spent; when there is work next."""
    deadline = time.monotonic() + budget_s if budget_s is not None else None

    def ring_pushes() -> None:
        for alarm in (pushes, held_sms):  # the senders learn of new jobs and when the first is due
            if alarm is not None:
                alarm.ring_at(datetime.now(UTC))

    while True:
        async with unit_of_work(sessionmaker) as session:
            batch = await service.send_next_batch(session, batch_size=batch_size, wakeup=wakeup)
            if batch is not None:
                after_commit(session, ring_pushes)
        if batch is None:
            break
        if deadline is not None and time.monotonic() > deadline:
            return datetime.now(UTC)  # more to do: the loop calls again at once, other jobs get a turn
    async with unit_of_work(sessionmaker) as session:
        return await service.next_due(session)


async def send_held_sms(
    sessionmaker: async_sessionmaker[AsyncSession], wakeup: OutboxWakeup | None = None
) -> datetime | None:
    """The SMS sender's job: one batch of held SMS whose time has come, in one unit of work. More due (a full
    batch, or rows another replica holds) is taken at the next run, which the returned time brings at once
    (the periodic runner keeps its minimum gap, so nothing spins on rows another replica has locked)."""
    async with unit_of_work(sessionmaker) as session:
        return await service.send_held_sms(session, wakeup=wakeup)


async def _main(database_url: str, batch_size: int) -> None:
    engine = make_engine(database_url, pool_size=2)
    try:
        await drain(make_sessionmaker(engine), batch_size=batch_size)
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Send every due campaign's batches, then exit.")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url or DATABASE_URL is required")
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main(args.database_url, args.batch_size))


if __name__ == "__main__":
    main()
