"""inbound_messages (the replay check of device messages) is pruned in bounded batches (issue 14): ids older
than the window go, oldest first; a copy of a message inside the window is still recognised as a copy.
PB_RETENTION_ROWS sets the table size (docs/events.md gives a run with millions)."""

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from device_svc.sweepers import prune_inbound_messages
from device_svc.telemetry.ingest import FIRST_TIME
from kit.db import make_engine, make_sessionmaker, unit_of_work

pytestmark = pytest.mark.integration

ROWS = int(os.environ.get("PB_RETENTION_ROWS", "200000"))
KEEP_S = 7 * 24 * 3600.0


async def test_old_message_ids_go_in_bounded_batches_and_the_window_still_catches_copies(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=30), now - timedelta(days=6)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM inbound_messages WHERE device_id LIKE 'RET-%'"))
            await conn.execute(
                text(
                    "INSERT INTO inbound_messages (device_id, msg_id, received_at) "
                    "SELECT 'RET-' || (i % 1000), 'm' || i, CAST(:old AS timestamptz) + i * interval '1 ms' "
                    "FROM generate_series(1, :n) i"
                ),
                {"old": old, "n": ROWS},
            )
            await conn.execute(
                text(
                    "INSERT INTO inbound_messages (device_id, msg_id, received_at) "
                    "SELECT 'RET-' || i, 'recent', CAST(:recent AS timestamptz) FROM generate_series(1, 100) i"
                ),
                {"recent": recent},
            )
            await conn.execute(text("ANALYZE inbound_messages"))

        started = time.perf_counter()
        first = await prune_inbound_messages(sessions, keep_s=KEEP_S, batch=5000, max_batches=2)
        bounded_s = time.perf_counter() - started
        assert first == 10000  # a run stops after max_batches; the next run goes on
        started = time.perf_counter()
        rest = await prune_inbound_messages(sessions, keep_s=KEEP_S, batch=5000, max_batches=10**6)
        all_s = time.perf_counter() - started
        assert rest == ROWS - 10000

        async with unit_of_work(sessions) as session:
            seen_first = (
                await session.execute(
                    FIRST_TIME,
                    {"devices": ["RET-7", "RET-7"], "msg_ids": ["recent", "m7"], "at": [now, now]},
                )
            ).all()
        # The copy of a message inside the window is still a copy; an id forgotten is new again.
        assert [tuple(row) for row in seen_first] == [("RET-7", "m7")]
        print(
            f"\ninbound_messages retention: {ROWS} old ids; a bounded run (2x5000) {bounded_s:.2f}s; all {all_s:.2f}s"
        )
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM inbound_messages WHERE device_id LIKE 'RET-%'"))
        await engine.dispose()
