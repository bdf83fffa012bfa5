"""Campaign fan-out rate: `python -m notify_svc.campaigns.bench --database-url URL [--recipients N]`
(or `make bench-campaigns` on the test stack). Builds a scratch database next to URL's (its name plus
`_bench`), seeds N consenting users set-based, sends one inbox campaign through the real fan-out loop and
prints recipients per second. A benchmark, not a test: the figure depends on the machine."""

import argparse
import asyncio
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from kit.db import make_engine, make_sessionmaker, unit_of_work
from kit.testing import ensure_database, migrate
from notify_svc.campaigns import fanout, service
from notify_svc.campaigns.schemas import CampaignIn, Channel, Segment

SERVICE_DIR = Path(__file__).resolve().parents[2]

SEED = (
    "INSERT INTO audience (user_id, registered_at) SELECT gen_random_uuid(), now() FROM generate_series(1, :n)",
    "INSERT INTO preferences (user_id, marketing_inbox, marketing_push, marketing_sms, timezone, updated_at)"
    " SELECT user_id, true, false, false, 'UTC', now() FROM audience",
)


async def run(database_url: str, recipients: int, batch_size: int) -> float:
    url = make_url(database_url)
    scratch = url.set(database=f"{url.database}_bench").render_as_string(hide_password=False)
    await ensure_database(scratch, recreate=True)
    migrate(SERVICE_DIR, scratch)
    engine = make_engine(scratch, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        async with unit_of_work(sessions) as session:
            for statement in SEED:
                await session.execute(text(statement), {"n": recipients})
            body = CampaignIn(
                title="Bench", text="Fan-out rate", segment=Segment(all_users=True), channels=[Channel.INBOX]
            )
            campaign = await service.create(session, body, "bench")
            await service.schedule(session, campaign.id, None)
        started = time.perf_counter()
        await fanout.drain(sessions, batch_size=batch_size)
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    rate = recipients / elapsed
    print(f"fan-out: {recipients} recipients in {elapsed:.2f} s = {rate:,.0f} recipients/s (batch {batch_size})")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.database_url, args.recipients, args.batch_size))


if __name__ == "__main__":
    main()
