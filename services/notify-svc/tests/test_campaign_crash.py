"""A campaign of 100,000 recipients, its fan-out process killed (SIGKILL) mid-way, completes after a
fresh process resumes: each recipient messaged exactly once. Runs in a scratch database of its own, so
the session's app (which sends campaigns too) does not take part."""

import asyncio
import signal
import sys
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from kit.db import make_engine, make_sessionmaker, unit_of_work
from kit.testing import ensure_database, eventually, migrate
from notify_svc.campaigns import service
from notify_svc.campaigns.bench import SEED, SERVICE_DIR
from notify_svc.campaigns.schemas import CampaignIn, Channel, Segment

pytestmark = pytest.mark.integration

RECIPIENTS = 100_000


async def _fanout(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notify_svc.campaigns.fanout",
        "--database-url",
        url,
        "--batch-size",
        "1000",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_a_killed_fanout_resumes_with_each_recipient_messaged_once(settings):
    url = make_url(settings.database_url)
    scratch = url.set(database=f"{url.database}_fanout").render_as_string(hide_password=False)
    await ensure_database(scratch, recreate=True)
    migrate(SERVICE_DIR, scratch)
    engine = make_engine(scratch, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        async with unit_of_work(sessions) as session:
            for statement in SEED:  # set-based: 100,000 audience rows in two statements
                await session.execute(text(statement), {"n": RECIPIENTS})
            body = CampaignIn(
                title="Crash", text="Once each", segment=Segment(all_users=True), channels=[Channel.INBOX]
            )
            campaign_id = (await service.create(session, body, "test")).id
            await service.schedule(session, campaign_id, None)

        async def one(sql: str) -> Any:
            async with unit_of_work(sessions) as session:
                return (await session.execute(text(sql), {"c": campaign_id})).one()

        first = await _fanout(scratch)

        async def some_batches_done() -> bool:
            (batches,) = await one("SELECT batches FROM campaigns WHERE id = :c")
            return bool(batches >= 5)

        await eventually(some_batches_done, timeout=60, interval=0.02, what="the fan-out under way")
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL

        status, batches, written = await one(
            "SELECT status, batches, (SELECT count(*) FROM messages WHERE campaign_id = :c) FROM campaigns WHERE id = :c"
        )
        assert status == "sending" and 0 < written < RECIPIENTS  # killed mid-way
        assert written == batches * 1000  # what committed is whole batches, each with its cursor

        second = await _fanout(scratch)
        assert await asyncio.wait_for(second.wait(), timeout=120) == 0

        status, inbox_sent, total, distinct, missed = await one(
            "SELECT status, inbox_sent,"
            " (SELECT count(*) FROM messages WHERE campaign_id = :c),"
            " (SELECT count(DISTINCT user_id) FROM messages WHERE campaign_id = :c),"
            " (SELECT count(*) FROM audience a WHERE NOT EXISTS"
            "   (SELECT 1 FROM messages m WHERE m.campaign_id = :c AND m.user_id = a.user_id))"
            " FROM campaigns WHERE id = :c"
        )
        assert (status, inbox_sent, total, distinct, missed) == ("sent", RECIPIENTS, RECIPIENTS, RECIPIENTS, 0)
        assert isinstance(campaign_id, uuid.UUID)
    finally:
        await engine.dispose()
