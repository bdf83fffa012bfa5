"""Retention of outbox and processed_events (issue 14): old published rows and old done ids go, in
bounded batches; recent ids (what idempotency needs), parked events and unpublished rows stay.
PB_RETENTION_ROWS sets the table size (docs/events.md gives a run with millions)."""

import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kit.db import make_sessionmaker
from kit.retention import prune
from kit.testing import kit_database

pytestmark = pytest.mark.integration

ROWS = int(os.environ.get("PB_RETENTION_ROWS", "200000"))


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database("pb_test_kit_retention") as engine:
        yield engine


async def test_old_rows_go_in_bounded_batches_and_what_idempotency_needs_stays(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=30), now - timedelta(hours=1)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO processed_events (consumer, event_id, event_type, status, processed_at) "
                "SELECT 'c' || (i % 4), gen_random_uuid(), 't', 'done', CAST(:old AS timestamptz) + i * interval '1 ms' "
                "FROM generate_series(1, :n) i"
            ),
            {"old": old, "n": ROWS},
        )
        await conn.execute(
            text(
                "INSERT INTO processed_events (consumer, event_id, event_type, status, error, processed_at) "
                "SELECT 'c0', gen_random_uuid(), 't', s, CASE WHEN s = 'failed' THEN 'boom' END, t "
                "FROM (VALUES ('done', CAST(:recent AS timestamptz)), ('failed', CAST(:old AS timestamptz))) v(s, t), "
                "generate_series(1, 100)"
            ),
            {"old": old, "recent": recent},
        )
        await conn.execute(
            text(
                "INSERT INTO outbox (event_id, event_type, topic, key, payload, created_at, published_at) "
                "SELECT gen_random_uuid(), 't', 'x', 'k', '\\x00', t, CASE WHEN i % 10 = 0 THEN NULL ELSE t END "
                "FROM (SELECT i, CAST(:old AS timestamptz) + i * interval '1 ms' AS t FROM generate_series(1, :n) i) g"
            ),
            {"old": old, "n": ROWS // 4},
        )
        await conn.execute(text("ANALYZE processed_events"))
        await conn.execute(text("ANALYZE outbox"))

    sessions = make_sessionmaker(engine)
    cutoff = now - timedelta(days=7)
    started = time.perf_counter()
    first = await prune(sessions, older_than=cutoff, batch=5000, max_batches=2)
    bounded_s = time.perf_counter() - started
    assert first.processed_events == 10000 and first.outbox == 10000  # a run stops after max_batches
    started = time.perf_counter()
    rest = await prune(sessions, older_than=cutoff, batch=5000, max_batches=10**6)
    all_s = time.perf_counter() - started
    assert rest.processed_events == ROWS - 10000
    assert rest.outbox == ROWS // 4 - ROWS // 40 - 10000
    async with engine.connect() as conn:
        left = dict((await conn.execute(text("SELECT status, count(*) FROM processed_events GROUP BY status"))).all())
        unpublished = (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar()
        outbox_left = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar()
    assert left == {"done": 100, "failed": 100}  # the window's ids and the parked events
    assert unpublished == outbox_left == ROWS // 40  # never prunes what was not published
    print(
        f"\nretention: {ROWS} ids + {ROWS // 4} outbox rows; a bounded run (2x5000 per table) {bounded_s:.2f}s; all {all_s:.2f}s"
    )
    assert bounded_s < 10
